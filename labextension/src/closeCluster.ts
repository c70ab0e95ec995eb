import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';

import { requestAPI } from './handler';
import { ICloseReply, ICluster } from './types';

/**
 * Ask, then close a cluster through the server (its own kernel's scheduler does the work).
 * Resolves true once the cluster is closed.
 */
export async function confirmAndClose(cluster: ICluster): Promise<boolean> {
  const running = cluster.tags.reduce((sum, t) => sum + (t.running ?? 0) + (t.pending ?? 0), 0);
  const result = await showDialog({
    title: `Close ${cluster.name}?`,
    body:
      `Its ${running} worker${running === 1 ? '' : 's'} stop, its jobs are cancelled and tasks still running are lost. ` +
      `The notebook ${cluster.notebook ?? 'that made it'} keeps its kernel.`,
    buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Close cluster' })]
  });
  if (!result.button.accept) {
    return false;
  }
  try {
    await requestAPI<ICloseReply>(`clusters/${encodeURIComponent(cluster.id)}/close`, {
      method: 'POST'
    });
    return true;
  } catch (error) {
    void showErrorMessage(`Cannot close ${cluster.name}`, (error as Error).message);
    return false;
  }
}

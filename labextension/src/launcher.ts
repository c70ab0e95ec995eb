import { JupyterFrontEnd } from '@jupyterlab/application';
import { ILauncher } from '@jupyterlab/launcher';

import { scalableIcon } from './icons';

export const NEW_NOTEBOOK = 'scalable:new-notebook';

/**
 * A "Scalable notebook" launcher item: a new notebook on the Scalable kernel (the one that
 * runs inside the scalable image), named by the `kernelName` setting.
 */
export function addLauncherItem(
  app: JupyterFrontEnd,
  launcher: ILauncher,
  kernelName: () => string
): void {
  app.commands.addCommand(NEW_NOTEBOOK, {
    label: 'Scalable Notebook',
    caption: 'A new notebook on the Scalable kernel',
    icon: scalableIcon,
    execute: async args => {
      const cwd = (args['cwd'] as string) ?? '';
      return app.commands.execute('notebook:create-new', { cwd, kernelName: kernelName() });
    }
  });
  launcher.add({ command: NEW_NOTEBOOK, category: 'Scalable', rank: 0 });
}

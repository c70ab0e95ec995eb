import { showErrorMessage } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { MimeData } from '@lumino/coreutils';
import { Drag } from '@lumino/dragdrop';

import { clientCode, clusterCode, INames, namesExpression, parseNames } from './insertCode';
import { ICluster } from './types';

/** The mime type a notebook accepts cells under (as dragging cells between notebooks). */
const CELLS_MIME = 'application/vnd.jupyter.cells';
/** Pixels the pointer moves before a press on "client" becomes a drag. */
const DRAG_THRESHOLD = 5;

/** Ask the notebook's kernel for its names of `cluster` (null when it is another kernel's). */
export async function namesIn(
  panel: NotebookPanel | null,
  cluster: ICluster
): Promise<INames | null> {
  const kernel = panel?.sessionContext.session?.kernel;
  if (!kernel || kernel.id !== cluster.kernel_id) {
    return null;
  }
  const expr = namesExpression(cluster.id);
  const future = kernel.requestExecute({
    code: '',
    silent: true,
    store_history: false,
    user_expressions: { scalable: expr }
  });
  const reply = await future.done;
  const value = (reply.content as any).user_expressions?.scalable;
  if (!value || value.status !== 'ok') {
    return { cluster: null, client: null };
  }
  return parseNames(String(value.data?.['text/plain'] ?? ''));
}

/** Inserts `cluster` / `client` code into notebooks: button (active notebook) and drag. */
export class NotebookInserter {
  constructor(private readonly _tracker: INotebookTracker) {}

  /** The code for `what`, or null with a message when it cannot be had here. */
  async code(
    panel: NotebookPanel | null,
    cluster: ICluster,
    what: 'cluster' | 'client'
  ): Promise<string | null> {
    const names = await namesIn(panel, cluster);
    if (what === 'client') {
      return clientCode(cluster, names);
    }
    const code = clusterCode(names);
    if (code === null) {
      void showErrorMessage(
        `Cannot insert ${cluster.name}'s cluster here`,
        names === null
          ? `${cluster.name} lives in the kernel of ${cluster.notebook ?? cluster.kernel_id ?? 'another notebook'}: ` +
              'only that notebook holds the cluster. Insert a client instead: it works from any notebook.'
          : `No variable of this notebook holds ${cluster.name}: insert a client instead.`
      );
    }
    return code;
  }

  /** Insert the code in a new cell below the active cell of the active notebook. */
  async insert(cluster: ICluster, what: 'cluster' | 'client'): Promise<void> {
    const panel = this._tracker.currentWidget;
    if (!panel) {
      void showErrorMessage(
        'No notebook to insert into',
        'Open a notebook, then press the button again.'
      );
      return;
    }
    const code = await this.code(panel, cluster, what);
    if (code === null) {
      return;
    }
    await insertCell(panel, code, false);
  }

  /** Watch a press on "client": past a few pixels it becomes a drag of a `client` cell. */
  watchDrag(cluster: ICluster, x: number, y: number): void {
    const move = (event: MouseEvent): void => {
      if (Math.abs(event.clientX - x) + Math.abs(event.clientY - y) < DRAG_THRESHOLD) {
        return;
      }
      stop();
      void this._startDrag(cluster, event.clientX, event.clientY);
    };
    const stop = (): void => {
      document.removeEventListener('mousemove', move, true);
      document.removeEventListener('mouseup', stop, true);
    };
    document.addEventListener('mousemove', move, true);
    document.addEventListener('mouseup', stop, true);
  }

  private async _startDrag(cluster: ICluster, x: number, y: number): Promise<void> {
    // another kernel's client needs no kernel to ask; the active notebook's may know names
    const code = clientCode(
      cluster,
      await namesIn(this._tracker.currentWidget, cluster).catch(() => null)
    );
    const image = document.createElement('div');
    image.className = 'jp-ScalableDragImage';
    image.textContent = code.split('\n').pop() ?? code;
    const mimeData = new MimeData();
    mimeData.setData(CELLS_MIME, [
      { cell_type: 'code', source: code, outputs: [], execution_count: null, metadata: {} }
    ]);
    mimeData.setData('text/plain', code);
    const drag = new Drag({
      mimeData,
      dragImage: image,
      proposedAction: 'copy',
      supportedActions: 'copy'
    });
    await drag.start(x, y);
  }
}

/** A new code cell with `source` below the active cell; run it when `run`. */
export async function insertCell(
  panel: NotebookPanel,
  source: string,
  run: boolean
): Promise<void> {
  const notebook = panel.content;
  NotebookActions.insertBelow(notebook);
  const cell = notebook.activeCell;
  if (!cell) {
    return;
  }
  cell.model.sharedModel.setSource(source);
  if (run) {
    await NotebookActions.run(notebook, panel.sessionContext);
  }
}

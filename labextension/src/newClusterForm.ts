import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { Widget } from '@lumino/widgets';

import { formProblem, INewCluster, newClusterCell } from './newClusterLine';
import { insertCell } from './notebookInsert';

function field(label: string, input: HTMLElement): HTMLLabelElement {
  const l = document.createElement('label');
  l.className = 'jp-ScalableNewCluster-field';
  const span = document.createElement('span');
  span.textContent = label;
  l.append(span, input);
  return l;
}

/** The form's body: local or Slurm, and for Slurm a queue and a walltime. */
class NewClusterBody extends Widget implements Dialog.IBodyWidget<INewCluster> {
  constructor() {
    super();
    this.addClass('jp-ScalableNewCluster');
    this._kind = document.createElement('select');
    this._kind.className = 'jp-ScalableNewCluster-kind';
    for (const [value, text] of [
      ['local', 'Local (processes here)'],
      ['slurm', 'Slurm']
    ]) {
      const option = document.createElement('option');
      option.value = value;
      option.textContent = text;
      this._kind.appendChild(option);
    }
    this._queue = document.createElement('input');
    this._queue.className = 'jp-ScalableNewCluster-queue';
    this._queue.placeholder = 'default partition';
    this._walltime = document.createElement('input');
    this._walltime.className = 'jp-ScalableNewCluster-walltime';
    this._walltime.placeholder = 'HH:MM:SS (default from config)';
    const slurm = [field('Queue', this._queue), field('Walltime', this._walltime)];
    const sync = (): void => slurm.forEach(f => (f.hidden = this._kind.value !== 'slurm'));
    this._kind.addEventListener('change', sync);
    sync();
    const note = document.createElement('p');
    note.textContent =
      'Runs a %scalable cluster line in the active notebook, which binds `cluster` and `client`.';
    this.node.append(field('Kind', this._kind), ...slurm, note);
  }

  getValue(): INewCluster {
    return {
      kind: this._kind.value === 'slurm' ? 'slurm' : 'local',
      queue: this._queue.value.trim(),
      walltime: this._walltime.value.trim()
    };
  }

  private _kind: HTMLSelectElement;
  private _queue: HTMLInputElement;
  private _walltime: HTMLInputElement;
}

/** Ask for the new cluster's kind, queue and walltime, then insert and run its magic line. */
export async function newCluster(tracker: INotebookTracker): Promise<void> {
  const panel = tracker.currentWidget;
  if (!panel) {
    void showErrorMessage(
      'No notebook for the new cluster',
      'Open a notebook: the cluster lives in its kernel.'
    );
    return;
  }
  const result = await showDialog<INewCluster>({
    title: 'New cluster',
    body: new NewClusterBody(),
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Create' })]
  });
  if (!result.button.accept || result.value === null) {
    return;
  }
  const problem = formProblem(result.value);
  if (problem) {
    void showErrorMessage('New cluster', problem);
    return;
  }
  await insertCell(panel, newClusterCell(result.value), true);
}

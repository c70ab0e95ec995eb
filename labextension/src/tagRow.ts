import { ITagStatus } from './types';

/** What a tag row asks of its owner when a − or + button is pressed. */
export type ScaleCallback = (tag: string, n: number) => void;

function cell(text: string, className: string, title: string): HTMLElement {
  const td = document.createElement('td');
  td.className = className;
  td.textContent = text;
  td.title = title;
  return td;
}

function describe(status: ITagStatus): string {
  const size = [
    status.cpus === null ? null : `${status.cpus} CPU${status.cpus === 1 ? '' : 's'}`,
    status.memory
  ].filter(Boolean);
  const where = status.image ? `image ${status.image}` : 'no image (local processes)';
  const waiting = status.waiting_tasks ? `, ${status.waiting_tasks} tasks waiting` : '';
  return `container tag ${status.tag}: ${where}${size.length ? `, ${size.join(', ')} per worker` : ''}${waiting}`;
}

function count(value: number | null): string {
  return value === null || value === undefined ? '–' : String(value);
}

function button(label: string, className: string, title: string, onClick: () => void): HTMLElement {
  const b = document.createElement('button');
  b.className = `jp-Button jp-mod-minimal ${className}`;
  b.textContent = label;
  b.title = title;
  b.setAttribute('aria-label', title);
  b.addEventListener('click', event => {
    event.stopPropagation();
    onClick();
  });
  return b;
}

/**
 * One table row per container tag: target, pending and running workers, and − / + buttons
 * that set the tag's target one lower or higher.
 */
export function tagRow(
  status: ITagStatus,
  enabled: boolean,
  onScale: ScaleCallback
): HTMLTableRowElement {
  const tr = document.createElement('tr');
  tr.className = 'jp-ScalableTag';
  tr.dataset.tag = status.tag;
  tr.appendChild(cell(status.tag, 'jp-ScalableTag-name', describe(status)));
  tr.appendChild(cell(count(status.target), 'jp-ScalableTag-target', 'target number of workers'));
  tr.appendChild(
    cell(count(status.pending), 'jp-ScalableTag-pending', 'workers requested, not yet connected')
  );
  tr.appendChild(
    cell(count(status.running), 'jp-ScalableTag-running', 'workers connected to the scheduler')
  );
  const controls = document.createElement('td');
  controls.className = 'jp-ScalableTag-controls';
  const target = status.target ?? 0;
  const minus = button('−', 'jp-ScalableTag-remove', `Remove one ${status.tag} worker`, () =>
    onScale(status.tag, Math.max(0, target - 1))
  );
  const plus = button('+', 'jp-ScalableTag-add', `Add one ${status.tag} worker`, () =>
    onScale(status.tag, target + 1)
  );
  (minus as HTMLButtonElement).disabled = !enabled || target <= 0;
  (plus as HTMLButtonElement).disabled = !enabled;
  controls.append(minus, plus);
  tr.appendChild(controls);
  return tr;
}

/** The header row matching {@link tagRow}. */
export function tagHeader(): HTMLTableRowElement {
  const tr = document.createElement('tr');
  for (const [label, title] of [
    ['tag', 'container tag'],
    ['target', 'target number of workers'],
    ['pending', 'requested, not yet connected'],
    ['running', 'connected to the scheduler'],
    ['', '']
  ]) {
    const th = document.createElement('th');
    th.textContent = label;
    th.title = title;
    tr.appendChild(th);
  }
  return tr;
}

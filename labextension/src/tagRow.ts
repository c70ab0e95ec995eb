import { adaptButton, IAdaptActions } from './adaptControl';
import { ITagStatus } from './types';
import { MAX_WORKERS, parseTarget } from './workers';

/** What a tag row asks of its owner when − / + is pressed or a target is typed. */
export type ScaleCallback = (tag: string, n: number) => void;

function cell(text: string, className: string, title: string): HTMLElement {
  const div = document.createElement('div');
  div.className = className;
  div.textContent = text;
  div.title = title;
  return div;
}

function describe(status: ITagStatus): string {
  const size = [
    status.cpus === null ? null : `${status.cpus} CPU${status.cpus === 1 ? '' : 's'}`,
    status.memory
  ].filter(Boolean);
  const where = status.image ? `image ${status.image}` : 'no image (local processes)';
  const waiting = status.waiting_tasks ? `, ${status.waiting_tasks} tasks waiting` : '';
  return `${status.tag}: ${where}${size.length ? `, ${size.join(', ')} per worker` : ''}${waiting}`;
}

function count(value: number | null): string {
  return value === null || value === undefined ? '–' : String(value);
}

function button(
  label: string,
  className: string,
  title: string,
  onClick: () => void
): HTMLButtonElement {
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

function targetInput(
  status: ITagStatus,
  enabled: boolean,
  onScale: ScaleCallback
): HTMLInputElement {
  const target = status.target ?? 0;
  const input = document.createElement('input');
  input.className = 'jp-ScalableTag-target';
  input.type = 'text';
  input.inputMode = 'numeric';
  input.value = count(status.target);
  input.title = `Target number of ${status.tag} workers: type a number and press Enter${
    status.adapt ? ' (this turns its adapt off)' : ''
  }`;
  input.setAttribute('aria-label', `target number of ${status.tag} workers`);
  input.disabled = !enabled;
  const apply = (): void => {
    const n = parseTarget(input.value);
    if (n === null) {
      input.classList.add('jp-mod-invalid');
      input.title = `Type a whole number of workers from 0 to ${MAX_WORKERS}`;
      return;
    }
    input.classList.remove('jp-mod-invalid');
    if (n !== target) {
      onScale(status.tag, n);
    }
  };
  input.addEventListener('keydown', event => {
    if (event.key === 'Enter') {
      event.preventDefault();
      apply();
      if (!input.classList.contains('jp-mod-invalid')) {
        input.blur(); // the sidebar redraws the row once the input lets go
      }
    } else if (event.key === 'Escape') {
      input.value = count(status.target);
      input.blur();
    }
  });
  input.addEventListener('change', apply);
  return input;
}

/**
 * One grid row per container tag: name, pending and running counts, then a fixed column
 * with − target +, then the tag's adapt toggle (below the controls when the sidebar is narrow).
 */
export function tagRow(
  status: ITagStatus,
  enabled: boolean,
  onScale: ScaleCallback,
  adaptActions: IAdaptActions
): HTMLElement {
  const row = document.createElement('div');
  row.className = 'jp-ScalableTagGrid jp-ScalableTag';
  row.dataset.tag = status.tag;
  row.setAttribute('role', 'row');
  row.appendChild(cell(status.tag, 'jp-ScalableTag-name', describe(status)));
  row.appendChild(
    cell(count(status.pending), 'jp-ScalableTag-pending', 'workers requested, not yet connected')
  );
  row.appendChild(
    cell(count(status.running), 'jp-ScalableTag-running', 'workers connected to the scheduler')
  );
  const controls = document.createElement('div');
  controls.className = 'jp-ScalableTag-controls';
  const target = status.target ?? 0;
  const minus = button('−', 'jp-ScalableTag-remove', `Remove one ${status.tag} worker`, () =>
    onScale(status.tag, Math.max(0, target - 1))
  );
  const plus = button('+', 'jp-ScalableTag-add', `Add one ${status.tag} worker`, () =>
    onScale(status.tag, target + 1)
  );
  minus.disabled = !enabled || target <= 0;
  plus.disabled = !enabled;
  controls.append(minus, targetInput(status, enabled, onScale), plus);
  row.appendChild(controls);
  const adapt = document.createElement('div');
  adapt.className = 'jp-ScalableTag-adapt';
  adapt.appendChild(adaptButton(status, enabled, adaptActions));
  row.appendChild(adapt);
  return row;
}

/** The header row matching {@link tagRow}. */
export function tagHeader(): HTMLElement {
  const row = document.createElement('div');
  row.className = 'jp-ScalableTagGrid jp-ScalableTag-header';
  for (const [label, title] of [
    ['tag', 'container tag'],
    ['pend', 'workers requested, not yet connected'],
    ['run', 'workers connected to the scheduler'],
    ['workers', 'target number of workers: − / + or type a number'],
    ['adapt', 'adapt: scale a tag between a minimum and a maximum from its waiting tasks']
  ]) {
    const div = document.createElement('div');
    div.textContent = label;
    div.title = title;
    row.appendChild(div);
  }
  return row;
}

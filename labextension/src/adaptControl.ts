import { IAdaptRange, ITagStatus } from './types';
import { MAX_WORKERS, parseTarget } from './workers';

/** What the adapt control asks of its owner: a range to adapt in, or null to stop adapting. */
export type AdaptCallback = (tag: string, range: IAdaptRange | null) => void;

/** What a tag row's adapt control needs from the sidebar: the editor's state and the action. */
export interface IAdaptActions {
  /** Whether the min / max editor of `tag` is open. */
  isOpen: (tag: string) => boolean;
  /** Open or close the editor of `tag`. */
  setOpen: (tag: string, open: boolean) => void;
  adapt: AdaptCallback;
}

/** "0–10", or "2–∞" when the range has no upper bound. */
export function rangeText(range: IAdaptRange): string {
  return `${range.minimum}–${range.maximum === null ? '∞' : range.maximum}`;
}

/**
 * A typed range: two whole numbers with min <= max, else a sentence saying what to change.
 * The server checks the upper bound against its own setting (scalable.max-workers-per-tag).
 */
export function parseRange(min: string, max: string): IAdaptRange | string {
  const minimum = parseTarget(min);
  const maximum = parseTarget(max);
  if (minimum === null || maximum === null) {
    return `Type whole numbers of workers from 0 to ${MAX_WORKERS}`;
  }
  if (minimum > maximum) {
    return `The minimum (${minimum}) is more than the maximum (${maximum})`;
  }
  return { minimum, maximum };
}

/**
 * The tag row's adapt toggle: "auto" while the tag is scaled by hand, "auto 0–10" while it
 * adapts. A click opens (or closes) the min / max editor below the row.
 */
export function adaptButton(
  status: ITagStatus,
  enabled: boolean,
  actions: IAdaptActions
): HTMLButtonElement {
  const range = status.adapt ?? null;
  const b = document.createElement('button');
  b.className = 'jp-Button jp-mod-minimal jp-ScalableTag-adaptToggle';
  const word = document.createElement('span');
  word.className = 'jp-ScalableTag-adaptWord';
  word.textContent = 'auto';
  b.appendChild(word);
  if (range) {
    b.classList.add('jp-mod-active');
    const text = document.createElement('span');
    text.className = 'jp-ScalableTag-adaptRange';
    text.textContent = ` ${rangeText(range)}`;
    b.appendChild(text);
    b.title = `${status.tag} adapts between ${range.minimum} and ${
      range.maximum === null ? 'any number of' : range.maximum
    } workers from its waiting tasks: click to change or turn off`;
  } else {
    b.title = `Adapt ${status.tag}: scale it between a minimum and a maximum from its waiting tasks`;
  }
  b.setAttribute('aria-label', b.title);
  b.setAttribute('aria-expanded', String(actions.isOpen(status.tag)));
  b.disabled = !enabled;
  b.addEventListener('click', event => {
    event.stopPropagation();
    actions.setOpen(status.tag, !actions.isOpen(status.tag));
  });
  return b;
}

function numberInput(value: string, className: string, label: string): HTMLInputElement {
  const input = document.createElement('input');
  input.className = `jp-ScalableTag-target ${className}`;
  input.type = 'text';
  input.inputMode = 'numeric';
  input.value = value;
  input.title = label;
  input.setAttribute('aria-label', label);
  return input;
}

function smallButton(label: string, className: string, title: string, onClick: () => void) {
  const b = document.createElement('button');
  b.className = `jp-Button jp-mod-minimal ${className}`;
  b.textContent = label;
  b.title = title;
  b.setAttribute('aria-label', title);
  // keep the focus in the min / max input: its blur would redraw the sidebar under the click
  b.addEventListener('mousedown', event => event.preventDefault());
  b.addEventListener('click', event => {
    event.stopPropagation();
    onClick();
  });
  return b;
}

/** The min / max editor shown below a tag row while its adapt toggle is open. */
export function adaptEditor(status: ITagStatus, actions: IAdaptActions): HTMLElement {
  const range = status.adapt ?? null;
  const tag = status.tag;
  const editor = document.createElement('div');
  editor.className = 'jp-ScalableTag-adaptEditor';
  editor.dataset.tag = tag;
  const label = (text: string) => {
    const span = document.createElement('span');
    span.className = 'jp-ScalableTag-adaptLabel';
    span.textContent = text;
    return span;
  };
  const min = numberInput(
    range ? String(range.minimum) : '0',
    'jp-ScalableTag-adaptMin',
    `fewest ${tag} workers while adapting`
  );
  const max = numberInput(
    range?.maximum !== undefined && range?.maximum !== null
      ? String(range.maximum)
      : String(Math.max(status.target ?? 0, 1)),
    'jp-ScalableTag-adaptMax',
    `most ${tag} workers while adapting`
  );
  const apply = (): void => {
    const parsed = parseRange(min.value, max.value);
    if (typeof parsed === 'string') {
      for (const input of [min, max]) {
        input.classList.add('jp-mod-invalid');
      }
      set.title = parsed;
      return;
    }
    actions.adapt(tag, parsed);
  };
  for (const input of [min, max]) {
    input.addEventListener('keydown', event => {
      if (event.key === 'Enter') {
        event.preventDefault();
        apply();
      } else if (event.key === 'Escape') {
        actions.setOpen(tag, false);
      }
    });
  }
  const set = smallButton(
    range ? 'set' : 'on',
    'jp-ScalableTag-adaptSet',
    `Adapt ${tag} in this range`,
    apply
  );
  editor.append(label('min'), min, label('max'), max, set);
  if (range) {
    editor.appendChild(
      smallButton('off', 'jp-ScalableTag-adaptOff', `Stop adapting ${tag}: keep its workers`, () =>
        actions.adapt(tag, null)
      )
    );
  }
  editor.appendChild(
    smallButton('✕', 'jp-ScalableTag-adaptClose', 'Close without changing', () =>
      actions.setOpen(tag, false)
    )
  );
  return editor;
}

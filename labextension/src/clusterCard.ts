import { adaptEditor, IAdaptActions } from './adaptControl';
import { IPlot, morePlots } from './plots';
import { ScaleCallback, tagHeader, tagRow } from './tagRow';
import { IAdaptRange, ICluster } from './types';

/** What a cluster card asks of the sidebar. */
export interface IClusterCardActions {
  scale: (cluster: ICluster, tag: string, n: number) => void;
  /** Adapt a tag in a range, or stop adapting it (null). */
  adapt: (cluster: ICluster, tag: string, range: IAdaptRange | null) => void;
  /** Whether a tag's adapt editor is open; open or close it. */
  adaptOpen: (cluster: ICluster, tag: string) => boolean;
  setAdaptOpen: (cluster: ICluster, tag: string, open: boolean) => void;
  openPlot: (cluster: ICluster, plot: IPlot) => void;
  close: (cluster: ICluster) => void;
  insert: (cluster: ICluster, what: 'cluster' | 'client') => void;
  /** Start dragging a `client` cell for this cluster (pointer at x, y). */
  drag: (cluster: ICluster, x: number, y: number) => void;
}

function line(label: string, value: string | null, className: string): HTMLElement {
  const div = document.createElement('div');
  div.className = `jp-ScalableCluster-field ${className}`;
  const key = document.createElement('span');
  key.className = 'jp-ScalableCluster-key';
  key.textContent = label;
  const val = document.createElement('span');
  val.className = 'jp-ScalableCluster-value';
  val.textContent = value ?? '–';
  val.title = value ?? '';
  div.append(key, val);
  return div;
}

function actionButton(
  label: string,
  action: string,
  title: string,
  onClick: () => void
): HTMLButtonElement {
  const b = document.createElement('button');
  b.className = `jp-Button jp-mod-minimal jp-ScalableCluster-action jp-ScalableCluster-${action}`;
  b.dataset.action = action;
  b.textContent = label;
  b.title = title;
  b.setAttribute('aria-label', title);
  b.addEventListener('click', event => {
    event.stopPropagation();
    onClick();
  });
  return b;
}

function titleRow(cluster: ICluster, actions: IClusterCardActions): HTMLElement {
  const title = document.createElement('div');
  title.className = 'jp-ScalableCluster-title';
  const name = document.createElement('span');
  name.className = 'jp-ScalableCluster-name';
  name.textContent = cluster.name;
  name.title = `${cluster.name} (${cluster.kind}, id ${cluster.id})`;
  const kind = document.createElement('span');
  kind.className = 'jp-ScalableCluster-kind';
  kind.textContent = cluster.kind;
  const close = actionButton(
    '✕',
    'close',
    `Close ${cluster.name}: stop its workers, cancel its jobs`,
    () => actions.close(cluster)
  );
  title.append(name, kind, close);
  return title;
}

function insertRow(cluster: ICluster, actions: IClusterCardActions): HTMLElement {
  const bar = document.createElement('div');
  bar.className = 'jp-ScalableCluster-inserts';
  const client = actionButton('client', 'insert-client', '', () =>
    actions.insert(cluster, 'client')
  );
  client.title = `Insert a client of ${cluster.name} into the active notebook (or drag it into a notebook)`;
  client.draggable = false; // lumino's drag, not the browser's: see the sidebar
  client.addEventListener('mousedown', event => {
    if (event.button === 0) {
      actions.drag(cluster, event.clientX, event.clientY);
    }
  });
  const clusterButton = actionButton('cluster', 'insert-cluster', '', () =>
    actions.insert(cluster, 'cluster')
  );
  clusterButton.title = `Insert ${cluster.name}'s cluster variable into the active notebook (its own kernel only)`;
  const label = document.createElement('span');
  label.className = 'jp-ScalableCluster-key';
  label.textContent = 'insert';
  bar.append(label, client, clusterButton);
  return bar;
}

function plotRow(cluster: ICluster, plots: IPlot[], actions: IClusterCardActions): HTMLElement {
  const bar = document.createElement('div');
  bar.className = 'jp-ScalableCluster-plots';
  for (const plot of plots) {
    const b = document.createElement('button');
    b.className = 'jp-Button jp-mod-styled jp-ScalableCluster-plot';
    b.dataset.plot = plot.id;
    b.textContent = plot.label;
    b.title = `Open the Dask ${plot.label} plot of ${cluster.name} in a tab`;
    b.addEventListener('click', () => actions.openPlot(cluster, plot));
    bar.appendChild(b);
  }
  const rest = morePlots(plots);
  if (rest.length > 0) {
    const more = document.createElement('select');
    more.className = 'jp-ScalableCluster-more';
    more.title = `More Dask plots of ${cluster.name}`;
    more.setAttribute('aria-label', more.title);
    const head = document.createElement('option');
    head.textContent = 'more…';
    head.value = '';
    more.appendChild(head);
    for (const plot of rest) {
      const option = document.createElement('option');
      option.value = plot.id;
      option.textContent = plot.label;
      more.appendChild(option);
    }
    more.addEventListener('change', () => {
      const plot = rest.find(p => p.id === more.value);
      more.value = '';
      if (plot) {
        actions.openPlot(cluster, plot);
      }
    });
    bar.appendChild(more);
  }
  return bar;
}

/**
 * One cluster in the sidebar: name, kind and close; kernel, scheduler and walltime; one row
 * per tag with − target +; insert buttons; the dashboard's plots.
 */
export function clusterCard(
  cluster: ICluster,
  plots: IPlot[],
  actions: IClusterCardActions
): HTMLElement {
  const card = document.createElement('div');
  card.className = 'jp-ScalableCluster';
  card.dataset.clusterId = cluster.id;
  if (!cluster.reachable) {
    card.classList.add('jp-mod-unreachable');
  }
  card.appendChild(titleRow(cluster, actions));
  card.appendChild(
    line('kernel', cluster.notebook ?? cluster.kernel_id, 'jp-ScalableCluster-kernel')
  );
  card.appendChild(line('scheduler', cluster.scheduler_address, 'jp-ScalableCluster-scheduler'));
  card.appendChild(line('walltime', cluster.walltime, 'jp-ScalableCluster-walltime'));
  for (const message of [cluster.error, cluster.last_error]) {
    if (message) {
      const err = document.createElement('div');
      err.className = 'jp-ScalableCluster-error';
      err.textContent = message;
      card.appendChild(err);
    }
  }

  const table = document.createElement('div');
  table.className = 'jp-ScalableCluster-tags';
  table.setAttribute('role', 'table');
  table.appendChild(tagHeader());
  const onScale: ScaleCallback = (tag, n) => actions.scale(cluster, tag, n);
  const adaptActions: IAdaptActions = {
    isOpen: tag => actions.adaptOpen(cluster, tag),
    setOpen: (tag, open) => actions.setAdaptOpen(cluster, tag, open),
    adapt: (tag, range) => actions.adapt(cluster, tag, range)
  };
  for (const status of cluster.tags) {
    table.appendChild(tagRow(status, cluster.reachable, onScale, adaptActions));
    if (cluster.reachable && adaptActions.isOpen(status.tag)) {
      table.appendChild(adaptEditor(status, adaptActions));
    }
  }
  card.appendChild(table);
  card.appendChild(insertRow(cluster, actions));
  if (cluster.dashboard_url) {
    card.appendChild(plotRow(cluster, plots, actions));
  }
  return card;
}

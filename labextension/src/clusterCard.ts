import { IPlot } from './plots';
import { ScaleCallback, tagHeader, tagRow } from './tagRow';
import { ICluster } from './types';

/** What a cluster card asks of the sidebar. */
export interface IClusterCardActions {
  scale: (cluster: ICluster, tag: string, n: number) => void;
  openPlot: (cluster: ICluster, plot: IPlot) => void;
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
  div.append(key, val);
  return div;
}

/**
 * One cluster in the sidebar: name and kind, kernel, scheduler and walltime, one row per tag
 * with scale buttons, and one button per dashboard plot.
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

  const title = document.createElement('div');
  title.className = 'jp-ScalableCluster-title';
  const name = document.createElement('span');
  name.className = 'jp-ScalableCluster-name';
  name.textContent = cluster.name;
  const kind = document.createElement('span');
  kind.className = 'jp-ScalableCluster-kind';
  kind.textContent = cluster.kind;
  title.append(name, kind);
  card.appendChild(title);

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

  const table = document.createElement('table');
  table.className = 'jp-ScalableCluster-tags';
  table.appendChild(tagHeader());
  const onScale: ScaleCallback = (tag, n) => actions.scale(cluster, tag, n);
  for (const status of cluster.tags) {
    table.appendChild(tagRow(status, cluster.reachable, onScale));
  }
  card.appendChild(table);

  if (cluster.dashboard_url && plots.length > 0) {
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
    card.appendChild(bar);
  }
  return card;
}

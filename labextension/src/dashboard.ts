import { IFrame, MainAreaWidget } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';

import { scalableIcon } from './icons';
import { IPlot } from './plots';
import { ICluster } from './types';

/** The proxied URL of one dashboard plot of a cluster, or null without a dashboard. */
export function plotURL(cluster: ICluster, plot: IPlot): string | null {
  if (!cluster.dashboard_url) {
    return null;
  }
  return URLExt.join(cluster.dashboard_url, plot.path);
}

/**
 * A JupyterLab tab showing one Dask dashboard plot through jupyter-server-proxy.
 *
 * The page comes from the Jupyter server's own origin (`{base_url}proxy/{port}/...`), so the
 * iframe needs scripts and same-origin access for Bokeh's websocket and Jupyter's cookie.
 */
export class DashboardTab extends MainAreaWidget<IFrame> {
  constructor(cluster: ICluster, plot: IPlot, url: string) {
    const content = new IFrame({
      sandbox: ['allow-scripts', 'allow-same-origin'],
      referrerPolicy: 'same-origin'
    });
    content.url = url;
    super({ content });
    this.id = DashboardTab.idFor(cluster, plot);
    this.title.label = `${plot.label} · ${cluster.name}`;
    this.title.caption = `Dask ${plot.label} of cluster ${cluster.name} (${cluster.scheduler_address})`;
    this.title.icon = scalableIcon;
    this.title.closable = true;
    this.addClass('jp-ScalableDashboard');
    this.node.dataset.plot = plot.id;
    this.node.dataset.clusterId = cluster.id;
  }

  /** One tab per cluster and plot: opening it again activates the existing tab. */
  static idFor(cluster: ICluster, plot: IPlot): string {
    return `scalable-dashboard-${cluster.id}-${plot.id}`;
  }
}

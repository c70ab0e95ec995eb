import { IFrame, MainAreaWidget } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { Panel, Widget } from '@lumino/widgets';

import { scalableIcon } from './icons';
import { IPlot } from './plots';
import { ICluster } from './types';

/** What a dashboard tab needs to be made again after a reload (the restorer keeps it). */
export interface IDashboardTabState {
  clusterId: string;
  clusterName: string;
  plotId: string;
  label: string;
  url: string;
}

/** The proxied URL of one dashboard plot of a cluster, or null without a dashboard. */
export function plotURL(cluster: ICluster, plot: IPlot): string | null {
  if (!cluster.dashboard_url) {
    return null;
  }
  return URLExt.join(cluster.dashboard_url, plot.path);
}

/** One tab per cluster and plot: opening it again activates the existing tab. */
export function dashboardTabId(clusterId: string, plotId: string): string {
  return `scalable-dashboard-${clusterId}-${plotId}`;
}

function proxiedFrame(url: string): Panel {
  // the page comes from Jupyter's own origin ({base_url}proxy/{port}/...): Bokeh's websocket
  // and Jupyter's cookie need scripts and same-origin access
  const frame = new IFrame({
    sandbox: ['allow-scripts', 'allow-same-origin'],
    referrerPolicy: 'same-origin'
  });
  frame.url = url;
  const panel = new Panel();
  panel.addClass('jp-ScalableDashboard-body');
  panel.addWidget(frame);
  return panel;
}

/**
 * A JupyterLab tab showing one Dask dashboard plot through jupyter-server-proxy.
 *
 * When its cluster closes, {@link setClosed} replaces the plot's frame with a sentence: the
 * page (and Bokeh's websocket, which would keep reconnecting to a dead port) goes away.
 */
export class DashboardTab extends MainAreaWidget<Panel> {
  constructor(state: IDashboardTabState) {
    super({ content: proxiedFrame(state.url) });
    this.state = state;
    this.id = dashboardTabId(state.clusterId, state.plotId);
    this.title.label = `${state.label} · ${state.clusterName}`;
    this.title.caption = `Dask ${state.label} of cluster ${state.clusterName}`;
    this.title.icon = scalableIcon;
    this.title.closable = true;
    this.addClass('jp-ScalableDashboard');
    this.node.dataset.plot = state.plotId;
    this.node.dataset.clusterId = state.clusterId;
  }

  readonly state: IDashboardTabState;

  get isClosed(): boolean {
    return this._closed;
  }

  /** Show "cluster closed" instead of the plot, and stop the page from reconnecting. */
  setClosed(): void {
    if (this._closed) {
      return;
    }
    this._closed = true;
    const note = new Widget();
    note.addClass('jp-ScalableDashboard-closed');
    note.node.textContent = `Cluster ${this.state.clusterName} closed: this ${this.state.label} plot has nothing more to show.`;
    // disposing the iframe ends its page, and with it Bokeh's websocket
    [...this.content.widgets].forEach(w => w.dispose());
    this.content.addWidget(note);
    this.node.dataset.closed = 'true';
    this.title.label = `${this.state.label} · ${this.state.clusterName} (closed)`;
  }

  private _closed = false;
}

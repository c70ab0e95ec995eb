import { ILayoutRestorer, JupyterFrontEnd } from '@jupyterlab/application';
import { WidgetTracker } from '@jupyterlab/apputils';

import { DashboardTab, dashboardTabId, IDashboardTabState, plotURL } from './dashboard';
import { requestAPI } from './handler';
import { IPlot } from './plots';
import { ICluster, IClusterList } from './types';

export const OPEN_PLOT = 'scalable:open-plot';

/**
 * The dashboard tabs: opened from the sidebar, brought back by JupyterLab's layout restorer
 * after a reload, and switched to "cluster closed" when their cluster goes away.
 */
export class DashboardTabs {
  constructor(
    private readonly _app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null
  ) {
    this._tracker = new WidgetTracker<DashboardTab>({ namespace: 'scalable-dashboard' });
    _app.commands.addCommand(OPEN_PLOT, {
      label: args => `Open ${String(args['label'] ?? 'a Dask plot')}`,
      execute: args => this._open(args as unknown as IDashboardTabState, args['restored'] === true)
    });
    if (restorer) {
      void restorer.restore(this._tracker, {
        command: OPEN_PLOT,
        args: tab => ({ ...tab.state, restored: true }),
        name: tab => tab.id
      });
    }
  }

  /** Whether any dashboard tab is open (the sidebar keeps watching clusters for them). */
  get count(): number {
    return this._tracker.size;
  }

  /** Open (or activate) a cluster's plot. */
  open(cluster: ICluster, plot: IPlot): void {
    const url = plotURL(cluster, plot);
    if (url === null) {
      return;
    }
    const state: IDashboardTabState = {
      clusterId: cluster.id,
      clusterName: cluster.name,
      plotId: plot.id,
      label: plot.label,
      url
    };
    void this._app.commands.execute(OPEN_PLOT, state as any);
  }

  /** Every tab of a cluster not in `live` says its cluster closed. */
  retain(live: ICluster[]): void {
    const ids = new Set(live.map(c => c.id));
    this._tracker.forEach(tab => {
      if (!ids.has(tab.state.clusterId)) {
        tab.setClosed();
      }
    });
  }

  /** The tabs of one cluster say it closed. */
  closed(clusterId: string): void {
    this._tracker.forEach(tab => {
      if (tab.state.clusterId === clusterId) {
        tab.setClosed();
      }
    });
  }

  private async _open(
    state: IDashboardTabState,
    restored: boolean
  ): Promise<DashboardTab | undefined> {
    const id = dashboardTabId(state.clusterId, state.plotId);
    const existing = this._tracker.find(tab => tab.id === id);
    if (existing) {
      this._app.shell.activateById(id);
      return existing;
    }
    let gone = false;
    if (restored) {
      // after a reload the cluster may be gone: do not point a page at a dead port
      // (the list, not clusters/{id}: a 404 would be an error in the browser's console)
      try {
        const reply = await requestAPI<IClusterList>('clusters');
        gone = !reply.clusters.some(c => c.id === state.clusterId);
      } catch {
        gone = false; // the server did not answer: keep the plot, the sidebar will tell
      }
    }
    const tab = new DashboardTab(state);
    if (gone) {
      tab.setClosed();
    }
    this._app.shell.add(tab, 'main');
    await this._tracker.add(tab);
    return tab;
  }

  private _tracker: WidgetTracker<DashboardTab>;
}

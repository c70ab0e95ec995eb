import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ILauncher } from '@jupyterlab/launcher';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { confirmAndClose } from './closeCluster';
import { interceptDashboardLinks } from './dashboardLinks';
import { DashboardTabs } from './dashboardTabs';
import { addLauncherItem } from './launcher';
import { newCluster } from './newClusterForm';
import { NotebookInserter } from './notebookInsert';
import { DEFAULT_PLOTS, plotsById } from './plots';
import { ScalableSidebar } from './sidebar';

const PLUGIN_ID = 'scalable:plugin';

/**
 * The Scalable sidebar, dashboard tabs and launcher item.
 */
const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Scalable sidebar: tagged Dask clusters of every kernel and their dashboards.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ILauncher, ILayoutRestorer, ISettingRegistry],
  activate: async (
    app: JupyterFrontEnd,
    notebooks: INotebookTracker,
    launcher: ILauncher | null,
    restorer: ILayoutRestorer | null,
    settingRegistry: ISettingRegistry | null
  ) => {
    let kernelName = 'scalable';
    const tabs = new DashboardTabs(app, restorer);
    const inserter = new NotebookInserter(notebooks);

    const sidebar = new ScalableSidebar({
      openPlot: (cluster, plot) => tabs.open(cluster, plot),
      close: async cluster => {
        const closed = await confirmAndClose(cluster);
        if (closed) {
          tabs.closed(cluster.id);
        }
        return closed;
      },
      insert: (cluster, what) => void inserter.insert(cluster, what),
      drag: (cluster, x, y) => inserter.watchDrag(cluster, x, y),
      newCluster: () => void newCluster(notebooks),
      listed: clusters => tabs.retain(clusters),
      keepWatching: () => tabs.count > 0,
      plots: plotsById(DEFAULT_PLOTS),
      refreshInterval: 5000
    });
    app.shell.add(sidebar, 'left', { rank: 250 });
    if (restorer) {
      restorer.add(sidebar, sidebar.id);
    }

    interceptDashboardLinks((port, plot) => {
      const cluster = sidebar.clusters.find(c => c.dashboard_port === port);
      if (cluster) {
        tabs.open(cluster, plot);
      } else {
        // not listed yet (or another user's): refresh, then open it if it is ours
        void sidebar.refresh().then(() => {
          const found = sidebar.clusters.find(c => c.dashboard_port === port);
          if (found) {
            tabs.open(found, plot);
          }
        });
      }
    });

    if (launcher) {
      addLauncherItem(app, launcher, () => kernelName);
    }

    if (settingRegistry) {
      try {
        const settings = await settingRegistry.load(PLUGIN_ID);
        const apply = (): void => {
          sidebar.refreshInterval = 1000 * (settings.get('refreshInterval').composite as number);
          sidebar.plots = plotsById(settings.get('defaultPlots').composite as string[]);
          kernelName = settings.get('kernelName').composite as string;
        };
        apply();
        settings.changed.connect(apply);
      } catch (reason) {
        console.error('scalable: cannot load settings, using defaults.', reason);
      }
    }
  }
};

export default plugin;

import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ILauncher } from '@jupyterlab/launcher';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { DashboardTab, plotURL } from './dashboard';
import { addLauncherItem } from './launcher';
import { DEFAULT_PLOTS, IPlot, plotsById } from './plots';
import { ScalableSidebar } from './sidebar';
import { ICluster } from './types';

const PLUGIN_ID = 'scalable:plugin';

export const OPEN_PLOT = 'scalable:open-plot';

/**
 * The Scalable sidebar, dashboard tabs and launcher item.
 */
const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Scalable sidebar: tagged Dask clusters of every kernel and their dashboards.',
  autoStart: true,
  optional: [ILauncher, ILayoutRestorer, ISettingRegistry],
  activate: async (
    app: JupyterFrontEnd,
    launcher: ILauncher | null,
    restorer: ILayoutRestorer | null,
    settingRegistry: ISettingRegistry | null
  ) => {
    let kernelName = 'scalable';

    const openPlot = (cluster: ICluster, plot: IPlot): void => {
      const id = DashboardTab.idFor(cluster, plot);
      for (const widget of app.shell.widgets('main')) {
        if (widget.id === id) {
          app.shell.activateById(id);
          return;
        }
      }
      const url = plotURL(cluster, plot);
      if (url === null) {
        return;
      }
      app.shell.add(new DashboardTab(cluster, plot, url), 'main');
    };

    const sidebar = new ScalableSidebar({
      openPlot,
      plots: plotsById(DEFAULT_PLOTS),
      refreshInterval: 5000
    });
    app.shell.add(sidebar, 'left', { rank: 250 });
    if (restorer) {
      restorer.add(sidebar, sidebar.id);
    }

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

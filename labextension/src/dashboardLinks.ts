import { PageConfig } from '@jupyterlab/coreutils';

import { IPlot, plotByPath } from './plots';

/**
 * Clicks on a proxied Dask dashboard link in notebook output or a cluster panel
 * (`{base_url}proxy/{port}/status` and the individual plots) open a lab tab instead of a
 * browser tab.
 */
export function interceptDashboardLinks(
  open: (port: number, plot: IPlot, url: string) => void
): void {
  const base = PageConfig.getBaseUrl().replace(/^https?:\/\/[^/]+/, '');
  // {base}proxy/{port}/[dashboard prefix/]{page}: the tab is opened from the cluster's own model
  const pattern = new RegExp(
    `^${base.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}proxy/(\\d+)/(?:[^?#]*/)?([A-Za-z-]+)$`
  );
  document.addEventListener(
    'click',
    event => {
      const anchor = (event.target as HTMLElement | null)?.closest?.('a');
      if (
        !anchor ||
        event.defaultPrevented ||
        event.button !== 0 ||
        event.ctrlKey ||
        event.metaKey
      ) {
        return;
      }
      if (!anchor.closest('.jp-OutputArea-output, .scalable-panel')) {
        return;
      }
      const url = new URL(anchor.href, window.location.href);
      const m = url.origin === window.location.origin ? pattern.exec(url.pathname) : null;
      const plot = m ? plotByPath(m[2]) : undefined;
      if (!m || !plot) {
        return;
      }
      event.preventDefault();
      event.stopPropagation();
      open(Number(m[1]), plot, url.pathname);
    },
    true
  );
}

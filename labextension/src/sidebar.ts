import { showErrorMessage } from '@jupyterlab/apputils';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { clusterCard } from './clusterCard';
import { requestAPI } from './handler';
import { scalableIcon } from './icons';
import { IPlot } from './plots';
import { IAdaptRange, IAdaptRequest, ICluster, IClusterList, IScaleRequest } from './types';

/** Clicks on − / + closer together than this are sent as one scale request. */
const SCALE_COALESCE_MS = 300;

export interface ISidebarOptions {
  openPlot: (cluster: ICluster, plot: IPlot) => void;
  /** Close a cluster (after asking); resolves true once it is closed. */
  close: (cluster: ICluster) => Promise<boolean>;
  insert: (cluster: ICluster, what: 'cluster' | 'client') => void;
  drag: (cluster: ICluster, x: number, y: number) => void;
  newCluster: () => void;
  /** Called with the live clusters after each refresh (dashboard tabs of others close). */
  listed: (clusters: ICluster[]) => void;
  /** Whether to keep refreshing while hidden (e.g. dashboard tabs are open). */
  keepWatching: () => boolean;
  plots: IPlot[];
  refreshInterval: number;
}

/**
 * The Scalable left-sidebar panel: every cluster registered on this host, refreshed
 * periodically while the panel is visible.
 */
export class ScalableSidebar extends Widget {
  constructor(options: ISidebarOptions) {
    super();
    this.id = 'scalable-sidebar';
    this.addClass('jp-ScalableSidebar');
    this.title.icon = scalableIcon;
    this.title.caption = 'Scalable clusters';
    this._options = options;
    this._plots = options.plots;
    this._interval = options.refreshInterval;

    const header = document.createElement('div');
    header.className = 'jp-ScalableSidebar-header';
    const title = document.createElement('h2');
    title.textContent = 'Scalable';
    title.title = 'Scalable clusters of every kernel';
    const refresh = document.createElement('button');
    refresh.className = 'jp-Button jp-mod-minimal jp-ScalableSidebar-refresh';
    refresh.textContent = '⟳';
    refresh.title = 'Refresh the list of clusters';
    refresh.addEventListener('click', () => void this.refresh());
    const create = document.createElement('button');
    create.className = 'jp-Button jp-mod-minimal jp-ScalableSidebar-new';
    create.textContent = '+ New';
    create.title = 'New cluster: run a %scalable cluster line in the active notebook';
    create.addEventListener('click', () => options.newCluster());
    const tools = document.createElement('div');
    tools.className = 'jp-ScalableSidebar-tools';
    tools.append(create, refresh);
    header.append(title, tools);
    this._list = document.createElement('div');
    this._list.className = 'jp-ScalableSidebar-list';
    // a refresh must not wipe a target being typed: redraw once the input loses focus
    this._list.addEventListener('focusout', () => {
      if (this._deferred) {
        window.setTimeout(() => this._render(), 0);
      }
    });
    this.node.append(header, this._list);
  }

  /** Milliseconds between refreshes while visible (0 stops refreshing). */
  set refreshInterval(ms: number) {
    this._interval = ms;
    this._schedule();
  }

  set plots(plots: IPlot[]) {
    this._plots = plots;
    this._render();
  }

  /** The clusters shown at the last refresh. */
  get clusters(): ICluster[] {
    return this._clusters;
  }

  /** Fetch the clusters from the server and redraw. */
  async refresh(): Promise<void> {
    try {
      const reply = await requestAPI<IClusterList>('clusters');
      this._clusters = reply.clusters;
      this._error = null;
      this._options.listed(this._clusters);
    } catch (error) {
      this._error = `Cannot list clusters: ${(error as Error).message}`;
    }
    this._render();
  }

  /**
   * Set one tag's target number of workers, then redraw with the cluster's new state.
   *
   * The new target shows at once: starting workers can take seconds, and a second click
   * meanwhile must count from the target already asked for, not from the old one. Clicks in
   * quick succession are sent as one request for the last target, so they cost the cluster
   * one submission (one `sbatch --array`) instead of one per click.
   */
  scale(cluster: ICluster, tag: string, n: number): void {
    const key = `${cluster.id}/${tag}`;
    this._pending.set(key, n);
    this._render();
    const waiting = this._sendTimers.get(key);
    if (waiting !== undefined) {
      window.clearTimeout(waiting);
    }
    this._sendTimers.set(
      key,
      window.setTimeout(() => {
        this._sendTimers.delete(key);
        void this._sendScale(cluster, tag, this._pending.get(key) ?? n);
      }, SCALE_COALESCE_MS)
    );
  }

  private async _sendScale(cluster: ICluster, tag: string, n: number): Promise<void> {
    const key = `${cluster.id}/${tag}`;
    const body: IScaleRequest = { tag, n };
    try {
      const updated = await requestAPI<ICluster>(
        `clusters/${encodeURIComponent(cluster.id)}/scale`,
        {
          method: 'POST',
          body: JSON.stringify(body)
        }
      );
      this._clusters = this._clusters.map(c => (c.id === updated.id ? updated : c));
    } catch (error) {
      void showErrorMessage(`Cannot scale ${tag} of ${cluster.name}`, (error as Error).message);
    } finally {
      if (this._pending.get(key) === n && !this._sendTimers.has(key)) {
        this._pending.delete(key);
      }
      this._render();
    }
  }

  /**
   * Adapt one tag of a cluster between `range.minimum` and `range.maximum` workers, or stop
   * adapting it (`range` null), then redraw with the cluster's new state.
   */
  async adapt(cluster: ICluster, tag: string, range: IAdaptRange | null): Promise<void> {
    const body: IAdaptRequest = {
      tag,
      minimum: range ? range.minimum : null,
      maximum: range ? range.maximum : null
    };
    try {
      const updated = await requestAPI<ICluster>(
        `clusters/${encodeURIComponent(cluster.id)}/adapt`,
        {
          method: 'POST',
          body: JSON.stringify(body)
        }
      );
      this._clusters = this._clusters.map(c => (c.id === updated.id ? updated : c));
      this._adaptOpen.delete(`${cluster.id}/${tag}`);
    } catch (error) {
      void showErrorMessage(`Cannot adapt ${tag} of ${cluster.name}`, (error as Error).message);
    } finally {
      this._render(true);
    }
  }

  /** Close a cluster (after asking), then drop it from the list at once. */
  async closeCluster(cluster: ICluster): Promise<void> {
    if (await this._options.close(cluster)) {
      this._clusters = this._clusters.filter(c => c.id !== cluster.id);
      this._render();
      this._options.listed(this._clusters);
    }
  }

  dispose(): void {
    this._sendTimers.forEach(timer => window.clearTimeout(timer));
    this._sendTimers.clear();
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
      this._timer = null;
    }
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    void this.refresh();
    this._schedule();
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    void this.refresh();
    this._schedule();
  }

  private _schedule(): void {
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
      this._timer = null;
    }
    if (this._interval <= 0 || this.isDisposed) {
      return;
    }
    this._timer = window.setTimeout(async () => {
      this._timer = null;
      // A hidden panel costs the schedulers nothing (refresh again once it is shown),
      // unless open dashboard tabs need to learn that their cluster closed.
      if (this.isVisible || this._options.keepWatching()) {
        await this.refresh();
        this._schedule();
      }
    }, this._interval);
  }

  /** Redraw; `force`: even while an input has the focus (its value was just sent). */
  private _render(force = false): void {
    const list = this._list;
    const active = document.activeElement;
    if (!force && active instanceof HTMLInputElement && list.contains(active)) {
      this._deferred = true;
      return;
    }
    this._deferred = false;
    list.replaceChildren();
    if (this._error) {
      const err = document.createElement('div');
      err.className = 'jp-ScalableSidebar-error';
      err.textContent = this._error;
      list.appendChild(err);
    }
    if (this._clusters.length === 0 && !this._error) {
      const empty = document.createElement('div');
      empty.className = 'jp-ScalableSidebar-empty';
      empty.textContent =
        'No cluster is running. Press "+ New", or create one in a notebook: cluster = LocalCluster() or SlurmCluster(...).';
      list.appendChild(empty);
    }
    for (const cluster of this._clusters) {
      list.appendChild(
        clusterCard(this._withPending(cluster), this._plots, {
          scale: (c, tag, n) => this.scale(c, tag, n),
          adapt: (c, tag, range) => void this.adapt(c, tag, range),
          adaptOpen: (c, tag) => this._adaptOpen.has(`${c.id}/${tag}`),
          setAdaptOpen: (c, tag, open) => {
            const key = `${c.id}/${tag}`;
            if (open) {
              this._adaptOpen.add(key);
            } else {
              this._adaptOpen.delete(key);
            }
            this._render(true);
          },
          openPlot: this._options.openPlot,
          close: c => void this.closeCluster(c),
          insert: this._options.insert,
          drag: this._options.drag
        })
      );
    }
  }

  /** The cluster as shown: targets asked for but not yet confirmed replace the reported ones. */
  private _withPending(cluster: ICluster): ICluster {
    const asked = (tag: string) => this._pending.get(`${cluster.id}/${tag}`);
    if (!cluster.tags.some(t => asked(t.tag) !== undefined)) {
      return cluster;
    }
    return {
      ...cluster,
      tags: cluster.tags.map(t =>
        asked(t.tag) === undefined ? t : { ...t, target: asked(t.tag)! }
      )
    };
  }

  private _clusters: ICluster[] = [];
  private _pending = new Map<string, number>();
  private _adaptOpen = new Set<string>();
  private _sendTimers = new Map<string, number>();
  private _error: string | null = null;
  private _interval: number;
  private _list: HTMLElement;
  private _options: ISidebarOptions;
  private _deferred = false;
  private _plots: IPlot[];
  private _timer: number | null = null;
}

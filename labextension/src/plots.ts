/** The Dask dashboard plots the sidebar offers, by the id used in the settings. */
export interface IPlot {
  id: string;
  label: string;
  /** Path under the dashboard root: Dask's individual plot pages, one plot each. */
  path: string;
}

/** Dask's individual plot pages (`/individual-*`), plus the whole status page. */
export const PLOTS: IPlot[] = [
  { id: 'task-stream', label: 'Task Stream', path: 'individual-task-stream' },
  { id: 'progress', label: 'Progress', path: 'individual-progress' },
  { id: 'memory', label: 'Workers Memory', path: 'individual-workers-memory' },
  { id: 'processing', label: 'Processing', path: 'individual-nprocessing' },
  { id: 'status', label: 'Status', path: 'status' },
  { id: 'workers', label: 'Workers', path: 'individual-workers' },
  { id: 'cpu', label: 'CPU', path: 'individual-cpu' },
  { id: 'occupancy', label: 'Occupancy', path: 'individual-occupancy' },
  { id: 'cluster-memory', label: 'Cluster Memory', path: 'individual-cluster-memory' },
  { id: 'group-progress', label: 'Group Progress', path: 'individual-group-progress' },
  { id: 'exceptions', label: 'Exceptions', path: 'individual-exceptions' },
  { id: 'memory-by-key', label: 'Memory by Key', path: 'individual-memory-by-key' },
  { id: 'graph', label: 'Task Graph', path: 'individual-graph' },
  { id: 'groups', label: 'Task Groups', path: 'individual-groups' },
  { id: 'profile', label: 'Profile', path: 'individual-profile' },
  {
    id: 'compute-time-per-key',
    label: 'Compute Time per Key',
    path: 'individual-compute-time-per-key'
  },
  { id: 'bandwidth-workers', label: 'Bandwidth by Worker', path: 'individual-bandwidth-workers' },
  { id: 'bandwidth-types', label: 'Bandwidth by Type', path: 'individual-bandwidth-types' },
  { id: 'system', label: 'Scheduler System', path: 'individual-scheduler-system' }
];

/** The short list shown as buttons; every other plot is under "more". */
export const DEFAULT_PLOTS = ['task-stream', 'progress', 'memory', 'processing'];

/** The plots named in `ids`, in the order given; unknown ids are skipped. */
export function plotsById(ids: string[]): IPlot[] {
  return ids.map(id => PLOTS.find(p => p.id === id)).filter((p): p is IPlot => p !== undefined);
}

/** The plots not in `shown`, in the order of {@link PLOTS}: the "more" menu. */
export function morePlots(shown: IPlot[]): IPlot[] {
  return PLOTS.filter(p => !shown.some(s => s.id === p.id));
}

/** The plot whose page is `path` (the last part of a dashboard URL), if it is one we know. */
export function plotByPath(path: string): IPlot | undefined {
  return PLOTS.find(p => p.path === path);
}

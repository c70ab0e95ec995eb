/** The Dask dashboard plots the sidebar offers, by the id used in the settings. */
export interface IPlot {
  id: string;
  label: string;
  /** Path under the dashboard root. */
  path: string;
}

export const PLOTS: IPlot[] = [
  { id: 'status', label: 'Status', path: 'status' },
  { id: 'task-stream', label: 'Task Stream', path: 'individual-task-stream' },
  { id: 'progress', label: 'Progress', path: 'individual-progress' },
  { id: 'workers', label: 'Workers', path: 'individual-workers' },
  { id: 'memory', label: 'Memory', path: 'individual-workers-memory' }
];

export const DEFAULT_PLOTS = ['status', 'task-stream', 'progress', 'workers', 'memory'];

/** The plots named in `ids`, in the order given; unknown ids are skipped. */
export function plotsById(ids: string[]): IPlot[] {
  return ids.map(id => PLOTS.find(p => p.id === id)).filter((p): p is IPlot => p !== undefined);
}

/** What the "New cluster" form asks for. */
export interface INewCluster {
  kind: 'local' | 'slurm';
  queue: string;
  walltime: string;
}

/** Slurm names (partitions) and walltimes: nothing a magic line could misread. */
const QUEUE_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const WALLTIME_RE = /^(\d+-)?\d{1,3}(:\d{2}){0,2}$/;

/** The sentence saying what to fix in the form, or null when it is fine. */
export function formProblem(form: INewCluster): string | null {
  if (form.kind === 'local') {
    return null;
  }
  if (form.queue && !QUEUE_RE.test(form.queue)) {
    return `Queue "${form.queue}" is not a Slurm partition name: use letters, digits, '_', '.' and '-' (e.g. slurm), or leave it empty for the default.`;
  }
  if (form.walltime && !WALLTIME_RE.test(form.walltime)) {
    return `Walltime "${form.walltime}" is not a Slurm time: write HH:MM:SS (e.g. 02:00:00), or leave it empty for the default.`;
  }
  return null;
}

/** The cell that starts the cluster: `%load_ext scalable` and one `%scalable cluster` line. */
export function newClusterCell(form: INewCluster): string {
  const parts = ['%scalable cluster'];
  if (form.kind === 'local') {
    parts.push('--local');
  } else {
    if (form.queue) {
      parts.push('--queue', form.queue);
    }
    if (form.walltime) {
      parts.push('--walltime', form.walltime);
    }
  }
  return `%load_ext scalable\n${parts.join(' ')}`;
}

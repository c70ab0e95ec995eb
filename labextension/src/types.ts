/**
 * The JSON models of the server extension; they mirror `cluster_model()` and
 * `tag_model()` in scalable/jupyter/handlers.py.
 */

/** One container tag of a cluster: its worker pool's target and live counts. */
export interface ITagStatus {
  tag: string;
  target: number | null;
  pending: number | null;
  running: number | null;
  idle: number | null;
  busy: number | null;
  waiting_tasks: number | null;
  /** The tag's container image (null: plain local processes), CPUs and memory per worker. */
  image: string | null;
  cpus: number | null;
  memory: string | null;
  /** The range the tag adapts in (maximum null: no upper bound), null while scaled by hand. */
  adapt?: IAdaptRange | null;
}

/** A tag's adapt range, as the cluster's TagPool.adapt_range gives it. */
export interface IAdaptRange {
  minimum: number;
  maximum: number | null;
}

/** One registered cluster, with its scheduler's answer when it gave one. */
export interface ICluster {
  id: string;
  name: string;
  kind: string;
  host: string | null;
  pid: number | null;
  kernel_id: string | null;
  notebook: string | null;
  scheduler_address: string;
  dashboard_port: number | null;
  /** Dashboard root through jupyter-server-proxy, absolute path ending in '/', or null. */
  dashboard_url: string | null;
  walltime: string | null;
  created: number | null;
  reachable: boolean;
  /** Whether its scheduler speaks TLS (older servers leave it out: see the address scheme). */
  tls?: boolean | null;
  /** Why the scheduler did not answer. */
  error: string | null;
  /** The cluster's own last failure, e.g. a job submission Slurm refused. */
  last_error: string | null;
  tags: ITagStatus[];
}

/** GET scalable/clusters */
export interface IClusterList {
  clusters: ICluster[];
}

/** POST scalable/clusters/{id}/scale */
export interface IScaleRequest {
  tag: string;
  n: number;
}

/** POST scalable/clusters/{id}/adapt (both null: adapt off); replies the cluster's model */
export interface IAdaptRequest {
  tag: string;
  minimum: number | null;
  maximum: number | null;
}

/** POST scalable/clusters/{id}/close */
export interface ICloseReply {
  id: string;
  closed: boolean;
}

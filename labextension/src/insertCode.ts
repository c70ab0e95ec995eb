import { ICluster } from './types';

/** The notebook's own names for a cluster and its client (from its kernel), if any. */
export interface INames {
  cluster: string | null;
  client: string | null;
}

/** A Python string literal for plain text (ids and addresses: ASCII, no quotes to escape). */
function py(text: string): string {
  return JSON.stringify(text);
}

/** Whether the cluster's scheduler speaks TLS (then a client needs its certificates). */
export function usesTLS(cluster: ICluster): boolean {
  return cluster.tls === true || cluster.scheduler_address.startsWith('tls://');
}

/**
 * Code that gives the notebook a client of `cluster`.
 *
 * In the cluster's own kernel (`names` known) the existing names are used: `client` if the
 * notebook has a client of it, else one made from its cluster variable. From another kernel
 * the cluster object is out of reach: a `ScalableClient` connects by address, with the
 * cluster's TLS credentials read from the user's private registry entry (never written into
 * the notebook).
 */
export function clientCode(cluster: ICluster, names: INames | null): string {
  if (names !== null && names.client) {
    return names.client;
  }
  if (names !== null && names.cluster) {
    return `from scalable import ScalableClient\nclient = ScalableClient(${names.cluster})`;
  }
  const lines = ['from scalable import ScalableClient'];
  if (usesTLS(cluster)) {
    lines.push('from scalable.jupyter.connect import security_for');
    lines.push(
      `client = ScalableClient(${py(cluster.scheduler_address)}, security=security_for(${py(cluster.id)}))` +
        `  # ${cluster.name}, TLS credentials from your cluster registry`
    );
  } else {
    lines.push(`client = ScalableClient(${py(cluster.scheduler_address)})  # ${cluster.name}`);
  }
  return lines.join('\n');
}

/** Code naming the cluster itself: only its own kernel holds it. */
export function clusterCode(names: INames | null): string | null {
  return names?.cluster ?? null;
}

/** The user expression that asks a kernel which of its variables hold the cluster. */
export function namesExpression(clusterId: string): string {
  return (
    "__import__('json').dumps(__import__('scalable.jupyter.connect', fromlist=['names_of'])" +
    `.names_of(${py(clusterId)}, globals()))`
  );
}

/** Parse the text/plain value of {@link namesExpression}: a repr of a JSON string. */
export function parseNames(textPlain: string): INames {
  const pick = (key: string): string | null => {
    const m = new RegExp(`"${key}": "([A-Za-z_][A-Za-z0-9_]*)"`).exec(textPlain);
    return m ? m[1] : null;
  };
  return { cluster: pick('cluster'), client: pick('client') };
}

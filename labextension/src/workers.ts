/** Upper bound of a typed target, as the server's (handlers.MAX_WORKERS). */
export const MAX_WORKERS = 10000;

/** A typed target: a whole number from 0 to MAX_WORKERS, else null. */
export function parseTarget(text: string): number | null {
  const trimmed = text.trim();
  if (!/^\d{1,6}$/.test(trimmed)) {
    return null;
  }
  const n = Number(trimmed);
  return n <= MAX_WORKERS ? n : null;
}

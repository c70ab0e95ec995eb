import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/**
 * Call the scalable server extension's REST API under `{base_url}scalable/`.
 *
 * Every request of the extension goes through here, so authentication (token, XSRF cookie)
 * and error reporting live in one place. A failed request rejects with the server's sentence.
 */
export async function requestAPI<T>(endPoint = '', init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'scalable', endPoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
  const text = await response.text();
  let data: any = text;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      // Not JSON (e.g. a proxy's HTML error page): keep the text for the message below.
    }
  }
  if (!response.ok) {
    throw new ServerConnection.ResponseError(response, data?.message ?? String(data));
  }
  return data as T;
}

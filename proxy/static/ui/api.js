// The gateway's public API as the page uses it, and the key the user typed: kept in
// sessionStorage (gone with the tab), sent only in the Authorization header, never in
// a URL.

const KEY_STORE = "imagegate.key";

export const $ = (id) => document.getElementById(id);

export function key() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

export function setKey(value) {
  if (value) sessionStorage.setItem(KEY_STORE, value);
  else sessionStorage.removeItem(KEY_STORE);
}

export function authHeaders() {
  const k = key();
  return k ? { Authorization: "Bearer " + k } : {};
}

// The API's error envelope as one line: the message and the field it names.
export async function apiError(resp) {
  let message = "HTTP " + resp.status;
  let param = null;
  try {
    const body = await resp.json();
    if (body && body.error) {
      message = body.error.message || message;
      param = body.error.param || null;
    }
  } catch (_) {
    // Not JSON (a proxy in front of the gateway): the status is all there is.
  }
  return param ? message + " (field: " + param + ")" : message;
}

export async function getJSON(path) {
  const resp = await fetch(path, { headers: authHeaders(), cache: "no-store" });
  if (!resp.ok) {
    const err = new Error(await apiError(resp));
    err.status = resp.status;
    throw err;
  }
  return resp.json();
}

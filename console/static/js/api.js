// The REST API as the console uses it: the login token kept per browser tab (sessionStorage), JSON
// in and out, and the two conditions every page must show: the backend cannot be reached, and the
// login has expired (the shell then goes back to the login form).

const KEYS = { token: 'console.token', role: 'console.role', email: 'console.email' };
const TIMEOUT_MS = 8000;

export const session = {
  get token() { return sessionStorage.getItem(KEYS.token); },
  get role() { return sessionStorage.getItem(KEYS.role) || 'viewer'; },
  get email() { return sessionStorage.getItem(KEYS.email) || ''; },
  get isAdmin() { return this.role === 'admin'; },
  save(token, role, email) {
    sessionStorage.setItem(KEYS.token, token);
    sessionStorage.setItem(KEYS.role, role);
    sessionStorage.setItem(KEYS.email, email);
  },
  clear() { for (const key of Object.values(KEYS)) sessionStorage.removeItem(key); },
};

// A refused or failed request. `message` is the API's own sentence (its envelope's `message`).
export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.message || body.error)) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    this.code = this.body.code || null;
  }
}

const listeners = { unreachable: [], reachable: [], expired: [] };
export function on(event, handler) { listeners[event].push(handler); }
function emit(event, detail) { for (const handler of listeners[event]) handler(detail); }

// A gateway's own error page (no JSON) while the service is down counts as unreachable too.
const GATEWAY_STATUSES = new Set([502, 503, 504]);

export async function api(path, { method = 'GET', body } = {}) {
  const headers = {};
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
  let response;
  try {
    response = await fetch(path, {
      method, headers, cache: 'no-store', signal: controller.signal,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    emit('unreachable', error);
    throw new ApiError(0, { message: 'the backend is unreachable' });
  } finally {
    clearTimeout(timer);
  }
  const isJson = (response.headers.get('Content-Type') || '').includes('application/json');
  if (!isJson && GATEWAY_STATUSES.has(response.status)) {
    emit('unreachable', response.status);
    throw new ApiError(0, { message: 'the backend is unreachable' });
  }
  emit('reachable');
  const data = isJson ? await response.json() : { message: await response.text() };
  if (response.status === 401 && path !== '/api/login') emit('expired', data);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const get = (path) => api(path);
export const post = (path, body) => api(path, { method: 'POST', body });

// A query string from an object, leaving out empty values.
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

// The Download Center API, from the page: same origin, the ID token in
// Authorization, the contract's error envelope turned into ApiError.

export class ApiError extends Error {
  constructor(status, code, message, details = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export class Api {
  /** base: the API's root URL (the page's base); session: auth.Session */
  constructor(base, session) {
    this.base = base;
    this.session = session;
  }

  url(path, query = {}) {
    const url = new URL(path.replace(/^\//, ""), this.base);
    for (const [name, value] of Object.entries(query)) {
      if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
    }
    return url;
  }

  async request(method, path, { query, body, headers = {} } = {}) {
    const send = async (token) => fetch(this.url(path, query), {
      method,
      headers: {
        ...headers,
        Authorization: token,
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    let response;
    try {
      response = await send(await this.session.idToken());
      if (response.status === 401) response = await send(await this.session.refresh());
    } catch (error) {
      if (error instanceof ApiError) throw error;
      if (error && error.code) throw new ApiError(401, error.code, error.message);
      throw new ApiError(0, "network", "Cannot reach the service.");
    }
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const err = (data && data.error) || {};
      // the API no longer takes this sign-in: end it (a failed revocation changes nothing here)
      if (response.status === 401) this.session.signOut().catch(() => {});
      throw new ApiError(response.status, err.code || `http_${response.status}`, err.message || response.statusText, err.details || []);
    }
    return data;
  }

  kinds() { return this.request("GET", "kinds"); }
  list(query) { return this.request("GET", "downloads", { query }); }
  get(id) { return this.request("GET", `downloads/${encodeURIComponent(id)}`); }
  /** idempotencyKey: the same key (and body) again answers with the first task, never a second one */
  create(body, { idempotencyKey } = {}) {
    return this.request("POST", "downloads", { body, headers: idempotencyKey ? { "Idempotency-Key": idempotencyKey } : {} });
  }
  cancel(id) { return this.request("POST", `downloads/${encodeURIComponent(id)}/cancel`); }
  retry(id) { return this.request("POST", `downloads/${encodeURIComponent(id)}/retry`); }
  remove(id) { return this.request("DELETE", `downloads/${encodeURIComponent(id)}`); }
  rename(id, taskName) { return this.request("PATCH", `downloads/${encodeURIComponent(id)}`, { body: { task_name: taskName } }); }
}

// Signing in with Cognito from the browser: InitiateAuth USER_PASSWORD_AUTH
// against the endpoint GET /console/config.json names, refreshed with the
// refresh token. Tokens live in sessionStorage (this tab only, gone when it
// closes), never in a URL. Signing out revokes the refresh token at Cognito
// (RevokeToken): deleting it here alone would leave a copy of it signing in
// for its whole life (30 days by default).

const STORAGE_KEY = "download-center.session";
const TARGET = "AWSCognitoIdentityProviderService.InitiateAuth";
const REVOKE_TARGET = "AWSCognitoIdentityProviderService.RevokeToken";
// refresh this long before the ID token expires
const REFRESH_MARGIN_MS = 60_000;

export class AuthError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/** The claims of a JWT (not verified: the API verifies; the page only shows them). */
export function claimsOf(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = decodeURIComponent(Array.from(atob(payload), (c) => `%${c.charCodeAt(0).toString(16).padStart(2, "0")}`).join(""));
    return JSON.parse(json);
  } catch {
    return {};
  }
}

export class Session {
  constructor(config) {
    this.config = config;
    this.listeners = new Set();
    this.refreshing = null;
    this.state = load();
  }

  get signedIn() {
    return Boolean(this.state && this.state.idToken);
  }

  /** What the page shows about the person: name, tenant, groups. */
  get user() {
    const claims = this.signedIn ? claimsOf(this.state.idToken) : {};
    const groups = claims["cognito:groups"] || [];
    return {
      username: claims["cognito:username"] || this.state?.username || "",
      email: claims.email || "",
      tenant: claims["custom:tenant"] || "default",
      groups,
      isAdmin: groups.includes("admin"),
      isTenantAdmin: groups.includes("tenant-admin"),
    };
  }

  onChange(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  async signIn(username, password) {
    const result = await this.initiateAuth({
      AuthFlow: "USER_PASSWORD_AUTH",
      AuthParameters: { USERNAME: username, PASSWORD: password },
    });
    this.store({ username, refreshToken: result.RefreshToken, ...tokens(result) });
  }

  /**
   * Sign out: the page forgets the tokens at once, and Cognito is asked to revoke the refresh
   * token (a request that outlives the page, should the tab close). Resolves to true when it
   * is revoked, false when there was none; rejects with an AuthError when Cognito could not
   * revoke it (the tokens are gone from the page all the same).
   */
  async signOut() {
    const refreshToken = this.state && this.state.refreshToken;
    this.store(null);
    if (!refreshToken) return false;
    await this.call(REVOKE_TARGET, { Token: refreshToken }, { keepalive: true });
    return true;
  }

  /** A valid ID token, refreshed first when it is about to expire. */
  async idToken() {
    if (!this.signedIn) throw new AuthError("signed_out", "Not signed in.");
    if (Date.now() < this.state.expiresAt - REFRESH_MARGIN_MS) return this.state.idToken;
    return this.refresh();
  }

  /** Exchange the refresh token for new tokens (once, however many callers ask at the same time). */
  async refresh() {
    if (!this.refreshing) {
      this.refreshing = this.initiateAuth({
        AuthFlow: "REFRESH_TOKEN_AUTH",
        AuthParameters: { REFRESH_TOKEN: this.state.refreshToken },
      }).then((result) => {
        this.store({ ...this.state, ...tokens(result) });
        return this.state.idToken;
      }, (error) => {
        this.store(null);
        throw error;
      }).finally(() => { this.refreshing = null; });
    }
    return this.refreshing;
  }

  async initiateAuth(body) {
    const data = await this.call(TARGET, body);
    if (!data.AuthenticationResult) {
      // e.g. NEW_PASSWORD_REQUIRED: an administrator must finish setting the account up
      throw new AuthError(data.ChallengeName || "challenge", "This account needs a step the console does not support.");
    }
    return data.AuthenticationResult;
  }

  /** One call of Cognito's JSON API (the app client is public: no AWS credentials); its answer. */
  async call(target, body, { keepalive = false } = {}) {
    let response;
    try {
      response = await fetch(this.config.cognito_endpoint, {
        method: "POST",
        headers: { "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target },
        body: JSON.stringify({ ClientId: this.config.client_id, ...body }),
        credentials: "omit",
        cache: "no-store",
        keepalive,
      });
    } catch {
      throw new AuthError("network", "Cannot reach the sign-in service.");
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const type = String(data.__type || "").split("#").pop();
      throw new AuthError(type || "sign_in_failed", data.message || "Sign-in failed.");
    }
    return data;
  }

  store(state) {
    this.state = state;
    try {
      if (state) sessionStorage.setItem(STORAGE_KEY, JSON.stringify(state));
      else sessionStorage.removeItem(STORAGE_KEY);
    } catch { /* storage blocked: the session lives in memory */ }
    for (const fn of this.listeners) fn(this);
  }
}

function tokens(result) {
  return { idToken: result.IdToken, expiresAt: Date.now() + (result.ExpiresIn || 3600) * 1000 };
}

function load() {
  try {
    const raw = sessionStorage.getItem(STORAGE_KEY);
    return raw ? JSON.parse(raw) : null;
  } catch {
    return null;
  }
}

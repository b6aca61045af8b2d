// The console's entry point: read the config, sign in, lay the page out and
// hand the downloads list and the export form their places.

import { Api } from "./api.js";
import { AuthError, Session } from "./auth.js";
import { h, replace, uid } from "./dom.js";
import { mountDownloads } from "./downloads.js";
import { openExportForm } from "./form.js";
import { addStrings, LANGUAGES, lang, onLangChange, setLang, t } from "./i18n.js";
import { mountToasts } from "./toasts.js";

addStrings({
  en: {
    "app.title": "Download Center",
    "app.loading": "Loading…",
    "app.config_failed": "The console cannot load its settings: {message}",
    "signin.heading": "Sign in",
    "signin.username": "Username",
    "signin.password": "Password",
    "signin.submit": "Sign in",
    "signin.busy": "Signing in…",
    "signin.failed": "Sign-in failed: {message}",
    "signin.bad_credentials": "Wrong username or password.",
    "signin.network": "Cannot reach the sign-in service.",
    "signout": "Sign out",
    "signout.not_revoked": "Signed out of this page, but the sign-in service could not end the session ({message}): a copy of its sign-in stays valid until it expires. Sign in and out again later.",
    "user.signed_in_as": "Signed in as {name}",
    "user.admin": "admin",
    "user.tenant_admin": "tenant admin",
    "language": "Language",
    "new_export": "New export",
    "api_description": "API description",
    "skip_to_downloads": "Skip to downloads",
  },
  zh: {
    "app.title": "下载中心",
    "app.loading": "加载中…",
    "app.config_failed": "控制台无法加载配置：{message}",
    "signin.heading": "登录",
    "signin.username": "用户名",
    "signin.password": "密码",
    "signin.submit": "登录",
    "signin.busy": "正在登录…",
    "signin.failed": "登录失败：{message}",
    "signin.bad_credentials": "用户名或密码错误。",
    "signin.network": "无法连接登录服务。",
    "signout": "退出登录",
    "signout.not_revoked": "已从此页面退出，但登录服务未能结束会话（{message}）：登录凭据的副本在过期前仍然有效。请稍后重新登录再退出。",
    "user.signed_in_as": "当前用户：{name}",
    "user.admin": "管理员",
    "user.tenant_admin": "租户管理员",
    "language": "语言",
    "new_export": "新建导出",
    "api_description": "API 说明",
    "skip_to_downloads": "跳到下载列表",
  },
});

const root = document.getElementById("app");
const base = new URL(".", document.baseURI).href;
let session = null;
let api = null;
let config = null;
let downloads = null;
let ctx = null; // what the modules share: api, session, config, toasts, user, downloads
const toasts = mountToasts(document.getElementById("toasts"));

function languageSwitch() {
  const id = uid("lang");
  const select = h("select", { id, onchange: (e) => setLang(e.target.value) },
    Object.entries(LANGUAGES).map(([code, name]) => h("option", { value: code, selected: code === lang() }, name)));
  return h("span", { class: "lang" }, h("label", { for: id }, t("language")), select);
}

function renderSignIn(error = "") {
  document.title = t("app.title");
  const username = uid("username");
  const password = uid("password");
  const message = h("p", { class: "error", role: "alert" }, error);
  const submit = h("button", { type: "submit", class: "primary" }, t("signin.submit"));
  const form = h("form", { class: "signin", method: "post", "aria-labelledby": "signin-heading" },
    h("h2", { id: "signin-heading" }, t("signin.heading")),
    h("label", { for: username }, t("signin.username")),
    h("input", { id: username, name: "username", autocomplete: "username", required: true, autocapitalize: "none", spellcheck: "false" }),
    h("label", { for: password }, t("signin.password")),
    h("input", { id: password, name: "password", type: "password", autocomplete: "current-password", required: true }),
    submit,
    message);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    submit.textContent = t("signin.busy");
    message.textContent = "";
    try {
      await session.signIn(form.username.value.trim(), form.password.value);
    } catch (err) {
      const reason = err instanceof AuthError && err.code === "NotAuthorizedException" ? t("signin.bad_credentials")
        : err instanceof AuthError && err.code === "UserNotFoundException" ? t("signin.bad_credentials")
          : err instanceof AuthError && err.code === "network" ? t("signin.network") : err.message;
      submit.disabled = false;
      submit.textContent = t("signin.submit");
      message.textContent = t("signin.failed", { message: reason });
      form.password.select();
    }
  });
  replace(root,
    h("header", { class: "bar" }, h("h1", {}, t("app.title")), languageSwitch()),
    h("main", { class: "signin-main" }, form));
  form.username.focus();
}

/** Sign out here and end the session at Cognito; say so when Cognito could not end it. */
function signOut() {
  session.signOut().catch((err) => toasts.show({
    text: t("signout.not_revoked", { message: err.message }), kind: "error", timeout: 0,
  }));
}

/** The signed-in page around the downloads list: header, toolbar, the list's place. */
function chrome(list) {
  const user = ctx.user;
  const role = user.isAdmin ? t("user.admin") : user.isTenantAdmin ? t("user.tenant_admin") : "";
  return [
    h("a", { class: "skip", href: "#downloads" }, t("skip_to_downloads")),
    h("header", { class: "bar" },
      h("h1", {}, t("app.title")),
      h("span", { class: "user" }, t("user.signed_in_as", { name: user.username }), role ? h("span", { class: "badge" }, role) : null),
      h("nav", {},
        h("a", { href: config.openapi || "openapi.json", target: "_blank", rel: "noopener" }, t("api_description")),
        languageSwitch(),
        h("button", { type: "button", onclick: signOut }, t("signout")))),
    h("main", {},
      h("div", { class: "toolbar" },
        h("button", { type: "button", class: "primary", onclick: () => openExportForm(ctx) }, t("new_export"))),
      list),
  ];
}

function renderConsole() {
  const list = h("section", { id: "downloads", class: "downloads", tabindex: "-1" });
  ctx = { api, session, config, toasts, user: session.user, base };
  replace(root, ...chrome(list));
  if (downloads) downloads.stop();
  downloads = mountDownloads(list, ctx);
  ctx.downloads = downloads;
}

function render() {
  if (session.signedIn) renderConsole();
  else {
    if (downloads) { downloads.stop(); downloads = null; ctx = null; }
    renderSignIn();
  }
}

async function start() {
  replace(root, h("p", { class: "loading" }, t("app.loading")));
  try {
    const response = await fetch(new URL("console/config.json", base), { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    config = await response.json();
  } catch (err) {
    replace(root, h("p", { class: "error", role: "alert" }, t("app.config_failed", { message: err.message })));
    return;
  }
  session = new Session(config);
  api = new Api(base, session);
  let wasSignedIn = session.signedIn;
  session.onChange(() => {
    // a refresh keeps the page as it is; signing in or out redraws it
    if (session.signedIn !== wasSignedIn) {
      wasSignedIn = session.signedIn;
      render();
    }
  });
  onLangChange(() => {
    // the chrome is redrawn; the downloads list and an open form redraw their own text
    if (!session.signedIn) renderSignIn();
    else renderChrome();
  });
  render();
}

/** Redraw the header and toolbar in the new language, keeping the list (it redraws itself). */
function renderChrome() {
  if (!downloads) return renderConsole();
  const list = document.getElementById("downloads");
  replace(root, ...chrome(list));
}

start();

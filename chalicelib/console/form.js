// The "New export" form, generated from GET /kinds.
// (Placeholder until the form lands.)

/**
 * Open the form (a dialog). ctx: {api, session, config, toasts, user, base, downloads};
 * on success it calls ctx.downloads.add(task) and closes.
 */
export function openExportForm(ctx) {
  return ctx;
}

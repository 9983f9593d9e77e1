// The server's settings out of VS Code's `stencil.*` section. Kept apart from
// extension.ts (no `vscode` import) so that plain Node can load it.
//
// The server refuses unknown keys (a typo in settings.json is reported, not ignored), so
// the client-only keys (`stencil.server.*`, `stencil.client.*`) are left out here.

/** The keys `stencil serve` reads (lsp_bridge/settings.py `Settings`). */
export const SERVER_KEYS = [
  "model",
  "device",
  "sampler",
  "max_tokens",
  "stop_at_newline",
  "context_tokens",
  "fim",
  "refresh_every",
  "speculative",
  "max_sessions",
  "analysis_timeout",
  "python",
  "json",
  "sql",
] as const;

/** What `vscode.WorkspaceConfiguration` offers that this module needs. */
export interface ConfigurationReader {
  get<T>(key: string): T | undefined;
}

/** `{stencil: {...}}` with the server's keys that have a value, as the server expects in
 * `initializationOptions` and `workspace/didChangeConfiguration`. */
export function serverSettings(config: ConfigurationReader): { stencil: Record<string, unknown> } {
  const stencil: Record<string, unknown> = {};
  for (const key of SERVER_KEYS) {
    const value = config.get<unknown>(key);
    if (value !== undefined) {
      stencil[key] = value;
    }
  }
  return { stencil };
}

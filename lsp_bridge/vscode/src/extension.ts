// The VS Code client of the Stencil language server (`stencil serve`, lsp_bridge/).
//
// It starts the server over stdio for Python, JSON and SQL documents; vscode-languageclient
// registers the server's inline completions (LSP 3.18 textDocument/inlineCompletion) and,
// when `stencil.client.completionList` is on, its classic completions. Settings under
// `stencil.*` reach the server at start and on every change.
import * as vscode from "vscode";
import {
  DidChangeConfigurationNotification,
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  TransportKind,
} from "vscode-languageclient/node";
import { serverSettings } from "./settings";

const LANGUAGES = ["python", "json", "jsonc", "sql"];
let client: LanguageClient | undefined;

function createClient(): LanguageClient {
  const config = vscode.workspace.getConfiguration("stencil");
  const command = config.get<string[]>("server.command") ?? ["stencil", "serve"];
  if (command.length === 0) {
    throw new Error("stencil.server.command is empty: give the server's command, e.g. [\"stencil\", \"serve\"]");
  }
  const serverOptions: ServerOptions = {
    command: command[0],
    args: command.slice(1),
    transport: TransportKind.stdio,
  };
  const clientOptions: LanguageClientOptions = {
    documentSelector: LANGUAGES.flatMap((language) => [
      { scheme: "file", language },
      { scheme: "untitled", language },
    ]),
    initializationOptions: serverSettings(config),
    middleware: {
      // the suggestion list is opt-in: inline completions are the main surface
      provideCompletionItem: (document, position, context, token, next) =>
        vscode.workspace.getConfiguration("stencil").get<boolean>("client.completionList")
          ? next(document, position, context, token)
          : undefined,
    },
  };
  return new LanguageClient("stencil", "Stencil", serverOptions, clientOptions);
}

async function generateWithGrammar(): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  if (!editor || !client) {
    return;
  }
  const grammar = await vscode.window.showInputBox({
    prompt: "Grammar: a built-in name (json, python, sql, ...) or Lark text",
    value: "json",
  });
  if (!grammar) {
    return;
  }
  const prompt = editor.document.getText(new vscode.Range(new vscode.Position(0, 0), editor.selection.active));
  const result = await client.sendRequest(ExecuteCommandRequest.type, {
    command: "stencil.generate",
    arguments: [{ prompt, grammar }],
  });
  const { text, valid } = result as { text: string; valid: boolean };
  await editor.edit((edit) => edit.insert(editor.selection.active, text));
  if (!valid) {
    vscode.window.showWarningMessage("Stencil: the generation stopped before the grammar's end (token budget).");
  }
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  client = createClient();
  context.subscriptions.push(
    vscode.commands.registerCommand("stencil.restartServer", async () => {
      await client?.restart();
    }),
    vscode.commands.registerCommand("stencil.generateWithGrammar", generateWithGrammar),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (!event.affectsConfiguration("stencil") || !client) {
        return;
      }
      if (event.affectsConfiguration("stencil.server.command")) {
        await client.dispose();
        client = createClient();
        await client.start();
        return;
      }
      await client.sendNotification(DidChangeConfigurationNotification.type, {
        settings: serverSettings(vscode.workspace.getConfiguration("stencil")),
      });
    }),
  );
  await client.start();
}

export async function deactivate(): Promise<void> {
  await client?.stop();
}

-- Drives Neovim's own LSP client (nothing of Stencil's) against `stencil serve`:
-- open a Python file, make an edit, ask textDocument/completion at the cursor, apply the
-- first item's textEdit with Neovim's own util, write the buffer and the server's copy
-- (stencil.documentText) as JSON to $STENCIL_OUT, then quit. Works with Neovim 0.7+.
-- Environment: STENCIL_FILE, STENCIL_ROOT, STENCIL_SERVER (JSON list: the command),
-- STENCIL_EDIT_LINE (0-based line to insert "STENCIL_EDIT_TEXT" before), STENCIL_OUT.
local env = vim.env
local out = env.STENCIL_OUT
local timeout = 600000

local function finish(result)
  local f = assert(io.open(out, "w"))
  f:write(vim.fn.json_encode(result))
  f:close()
  vim.cmd("qall!")
end

local function run()
  vim.cmd("edit " .. vim.fn.fnameescape(env.STENCIL_FILE))
  local bufnr = vim.api.nvim_get_current_buf()
  local client_id = vim.lsp.start_client({
    name = "stencil",
    cmd = vim.fn.json_decode(env.STENCIL_SERVER),
    root_dir = env.STENCIL_ROOT,
    init_options = { stencil = { max_tokens = 32, analysis_timeout = 120.0 } },
  })
  assert(client_id, "the client did not start")
  vim.lsp.buf_attach_client(bufnr, client_id)
  local client = vim.lsp.get_client_by_id(client_id)
  assert(vim.wait(timeout, function() return client.initialized end, 50), "no initialize response")

  -- an edit Neovim sends as an incremental didChange
  local edit_line = tonumber(env.STENCIL_EDIT_LINE)
  vim.api.nvim_buf_set_lines(bufnr, edit_line, edit_line, false, { env.STENCIL_EDIT_TEXT })

  -- the end of the last line (after `first.`; ASCII, so bytes are UTF-16 units), where
  -- insert mode's cursor would be (normal mode's cannot be past the last character)
  local last = vim.api.nvim_buf_line_count(bufnr)
  local line = vim.api.nvim_buf_get_lines(bufnr, last - 1, last, false)[1]
  local params = {
    textDocument = vim.lsp.util.make_text_document_params(bufnr),
    position = { line = last - 1, character = #line },
  }
  local responses, err = vim.lsp.buf_request_sync(bufnr, "textDocument/completion", params, timeout)
  assert(responses, "completion: " .. tostring(err))
  local response = responses[client_id]
  assert(response and not response.err, "completion error: " .. vim.inspect(response and response.err))
  local items = response.result.items or response.result
  assert(#items > 0, "no completion item")
  local item = items[1]
  vim.lsp.util.apply_text_edits({ item.textEdit }, bufnr, client.offset_encoding)

  -- wait for the server's copy to catch up with the buffer (didChange may be debounced)
  local buffer = table.concat(vim.api.nvim_buf_get_lines(bufnr, 0, -1, false), "\n") .. "\n"
  local server_copy
  vim.wait(30000, function()
    local r = vim.lsp.buf_request_sync(bufnr, "workspace/executeCommand", {
      command = "stencil.documentText",
      arguments = { vim.uri_from_bufnr(bufnr) },
    }, timeout)
    server_copy = r and r[client_id] and r[client_id].result
    return server_copy == buffer
  end, 200)
  vim.lsp.stop_client(client_id)
  finish({ inserted = item.textEdit.newText, buffer = buffer, server = server_copy })
end

local ok, message = pcall(run)
if not ok then
  finish({ error = tostring(message) })
end

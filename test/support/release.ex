defmodule Symbiont.Release do
  @moduledoc false
  # The release of `MIX_ENV=prod mix release` (README.md, "Releases"), built once per test
  # suite for the tests that start one (test/symbiont/release_test.exs, cookie_test.exs):
  # with SYMBIONT_CONFIG naming test/fixtures/release/config.exs, so that it holds the
  # demo's agents and the shop's Wasm module too. Removed when the suite ends.

  @config "test/fixtures/release/config.exs"

  @doc false
  # The release's directory. The first caller builds it; the others wait for it.
  def build! do
    :global.trans({__MODULE__, self()}, fn ->
      case :persistent_term.get(__MODULE__, nil) do
        nil ->
          path = Path.join(System.tmp_dir!(), "symbiont-release-#{System.pid()}")
          ExUnit.after_suite(fn _ -> File.rm_rf(path) end)

          {out, status} =
            System.cmd("mix", ["release", "--overwrite", "--path", path],
              env: [{"MIX_ENV", "prod"}, {"SYMBIONT_CONFIG", @config}],
              stderr_to_stdout: true
            )

          if status != 0, do: raise("mix release failed (exit #{status}):\n#{out}")
          :persistent_term.put(__MODULE__, path)
          path

        path ->
          path
      end
    end)
  end

  @doc false
  # The SYMBIONT_CONFIG the release was built with, relative to its app/.
  def config, do: @config
end

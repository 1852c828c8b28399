defmodule Symbiont.Config do
  @moduledoc false
  # Where Symbiont finds things at run time: one place for the defaults that several
  # modules need (the Python executable, the SDK's source directory, the directory that
  # relative paths of the configuration are resolved against).

  @doc """
  The directory holding the `symbiont` Python package: `priv/python` of the application
  (`Application.app_dir/2`). In the checkout it is a link to `python/symbiont`; a release
  holds a copy (`mix release` follows the link).
  """
  @spec python_src() :: Path.t()
  def python_src, do: Application.app_dir(:symbiont, "priv/python")

  @doc """
  The directory relative paths of the configuration are resolved against (`:python_path`,
  `:wasm`, `:data_dir`, `:cd`, `SYMBIONT_CONFIG`, `.venv`): in a release,
  `$RELEASE_ROOT/app`, where `mix release` copied the project's agent code and Wasm
  modules (README.md, "Releases"); under Mix, the project's directory (where `mix` runs).
  A release never depends on the directory it was started from.
  """
  @spec root() :: Path.t()
  def root do
    case System.get_env("RELEASE_ROOT", "") do
      "" -> File.cwd!()
      release -> Path.join(release, "app")
    end
  end

  @doc "`path` resolved against `root/0` (an absolute path stays as it is)."
  @spec resolve(Path.t()) :: Path.t()
  def resolve(path), do: Path.expand(path, root())

  @doc """
  The Python executable hosts are started with, in this order: the `:python` application
  env, `$SYMBIONT_PYTHON`, `.venv/bin/python` under `root/0`, `python3` on `$PATH`.
  """
  @spec python_executable() :: {:ok, Path.t()} | {:error, {:python_not_found, term}}
  def python_executable do
    candidate =
      Application.get_env(:symbiont, :python) ||
        non_empty(System.get_env("SYMBIONT_PYTHON")) ||
        first_existing([resolve(".venv/bin/python")]) ||
        System.find_executable("python3")

    resolve_executable(candidate)
  end

  defp non_empty(""), do: nil
  defp non_empty(value), do: value

  @doc false
  @spec resolve_executable(term) :: {:ok, Path.t()} | {:error, {:python_not_found, term}}
  def resolve_executable(path) when is_binary(path) do
    cond do
      String.contains?(path, "/") and File.regular?(resolve(path)) ->
        {:ok, resolve(path)}

      not String.contains?(path, "/") and System.find_executable(path) ->
        {:ok, System.find_executable(path)}

      true ->
        {:error, {:python_not_found, path}}
    end
  end

  def resolve_executable(other), do: {:error, {:python_not_found, other}}

  @doc """
  The config file the manifest's agents are read from again by
  `Symbiont.Manifest.reload/2`: `$SYMBIONT_CONFIG` when it is set (`config/runtime.exs`
  applies that file on top of `config/config.exs` at start; `make shop` sets it), else
  `config/config.exs`; a relative path is resolved against `root/0` (a release holds
  the project's `config/` and the file `SYMBIONT_CONFIG` named when it was built).
  """
  @spec manifest_file() :: Path.t()
  def manifest_file do
    case System.get_env("SYMBIONT_CONFIG", "") do
      "" -> resolve("config/config.exs")
      path -> resolve(path)
    end
  end

  @doc """
  Puts the user's `HOME` back when the VM was started with `HOME` pointing at the
  directory that holds its cookie (`$SYMBIONT_USER_HOME` says so; `make run` and the
  release do it, docs/SECURITY.md §3): Erlang has read its cookie from there by now, and
  hosts and everything else should see the user's own home. Does nothing otherwise.
  """
  @spec restore_user_home() :: :ok
  def restore_user_home do
    case System.get_env("SYMBIONT_USER_HOME", "") do
      "" ->
        :ok

      home ->
        System.put_env("HOME", home)
        System.delete_env("SYMBIONT_USER_HOME")
    end
  end

  defp first_existing(paths), do: Enum.find(paths, &File.regular?/1)
end

defmodule Symbiont.Config do
  @moduledoc false
  # Where Symbiont finds things at run time: one place for the defaults that several
  # modules need (the Python executable, the SDK's source directory).

  @python_src Path.expand("../../python", __DIR__)

  @doc "The directory holding the `symbiont` Python package of this checkout."
  @spec python_src() :: Path.t()
  def python_src, do: @python_src

  @doc """
  The Python executable hosts are started with, in this order: the `:python` application
  env, `$SYMBIONT_PYTHON`, `.venv/bin/python` under the current directory, `python3` on
  `$PATH`.
  """
  @spec python_executable() :: {:ok, Path.t()} | {:error, {:python_not_found, term}}
  def python_executable do
    candidate =
      Application.get_env(:symbiont, :python) ||
        System.get_env("SYMBIONT_PYTHON") ||
        first_existing([Path.expand(".venv/bin/python")]) ||
        System.find_executable("python3")

    resolve_executable(candidate)
  end

  @doc false
  @spec resolve_executable(term) :: {:ok, Path.t()} | {:error, {:python_not_found, term}}
  def resolve_executable(path) when is_binary(path) do
    cond do
      String.contains?(path, "/") and File.regular?(path) ->
        {:ok, Path.expand(path)}

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
  `config/config.exs`, under the current directory.
  """
  @spec manifest_file() :: Path.t()
  def manifest_file do
    case System.get_env("SYMBIONT_CONFIG", "") do
      "" -> Path.expand("config/config.exs")
      path -> Path.expand(path)
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

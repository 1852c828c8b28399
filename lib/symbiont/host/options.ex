defmodule Symbiont.Host.Options do
  @moduledoc """
  The options of a host (listed in `Symbiont.Host`), validated once, at the edge, into
  the config its owner runs on: defaults, application env, and errors that name the
  option, the value and what is allowed.

  `Symbiont.Host.validate_options/1` and `Symbiont.Python` call it; the config keeps the
  options as given (`:opts`), so that a host of its own for an agent isolated from a
  shared host starts like it (`Symbiont.Host.Blame`).
  """

  alias Symbiont.Host.Output

  @defaults [
    call_timeout: 5_000,
    start_timeout: 10_000,
    max_frame: 64 * 1024 * 1024,
    backoff_max: 5_000,
    log_lines: 20,
    grace: 2_000
  ]
  @allowed_keys [
    :name,
    :python,
    :python_path,
    :cd,
    :env,
    :inherit_env,
    :output_limit,
    :heartbeat_ms,
    :max_mailbox,
    :isolate_after,
    :isolate_window_ms | Keyword.keys(@defaults)
  ]

  @doc """
  Validates host options once, at the edge.

      iex> {:error, %ArgumentError{message: msg}} = Symbiont.Host.Options.validate(call_timeout: -1)
      iex> msg
      "expected :call_timeout to be a positive integer (milliseconds), got: -1"
  """
  @spec validate(keyword) :: {:ok, map} | {:error, Exception.t()}
  def validate(opts) when is_list(opts) do
    with :ok <- known_keys(opts),
         opts = Keyword.merge(@defaults ++ env_defaults(), opts),
         {:ok, name} <- validate_name(Keyword.get(opts, :name)),
         :ok <- each_positive(opts, Keyword.keys(@defaults ++ env_defaults())),
         {:ok, python} <- validate_python(Keyword.get(opts, :python)),
         {:ok, cd} <- validate_cd(Keyword.get(opts, :cd, Symbiont.Config.root())),
         {:ok, paths} <- validate_paths(Keyword.get(opts, :python_path), cd),
         {:ok, env} <- validate_env(Keyword.get(opts, :env, [])),
         {:ok, inherit} <- validate_inherit_env(Keyword.get(opts, :inherit_env)),
         {:ok, output} <- Output.validate(Keyword.get(opts, :output_limit, [])) do
      {:ok,
       opts
       |> Map.new()
       |> Map.merge(%{
         # As given (and validated): a host of its own for an agent isolated from this one
         # starts with the same (Symbiont.Host.Blame).
         opts: Keyword.put(opts, :name, name),
         name: name,
         python: python,
         cd: cd,
         python_path: paths,
         env: env,
         inherit_env: inherit,
         output_limit: output
       })}
    else
      {:error, message} when is_binary(message) -> {:error, ArgumentError.exception(message)}
    end
  end

  # The defaults the application environment may change.
  defp env_defaults do
    [
      heartbeat_ms: Symbiont.Config.get(:heartbeat_ms),
      max_mailbox: Symbiont.Config.get(:max_mailbox),
      isolate_after: Symbiont.Config.get(:isolate_after),
      isolate_window_ms: Symbiont.Config.get(:isolate_window_ms)
    ]
  end

  defp known_keys(opts) do
    case Enum.find(opts, fn {k, _} -> k not in @allowed_keys end) do
      nil -> :ok
      {k, _} -> {:error, "unknown option #{inspect(k)}, allowed: #{inspect(@allowed_keys)}"}
    end
  end

  defp validate_name(nil), do: {:ok, "python-#{System.unique_integer([:positive])}"}
  defp validate_name(name) when is_atom(name), do: validate_name(Atom.to_string(name))

  defp validate_name(name) when is_binary(name) and byte_size(name) in 1..128 do
    if String.printable?(name),
      do: {:ok, name},
      else: {:error, "expected :name to be printable, got: #{inspect(name)}"}
  end

  defp validate_name(name),
    do: {:error, "expected :name to be a string of 1 to 128 bytes, got: #{inspect(name)}"}

  @doc """
  The longest time in ms a caller may give: a BEAM timer takes 2^32-1, and the wait for
  the owner's answer is 5 s longer than a call's timeout (`Symbiont.Host.call/5`).

      iex> Symbiont.Host.Options.max_ms()
      4294962295
  """
  @spec max_ms() :: pos_integer
  def max_ms, do: 0xFFFFFFFF - 5_000

  defp each_positive(opts, keys) do
    Enum.reduce_while(keys, :ok, fn key, :ok ->
      case Keyword.fetch!(opts, key) do
        v
        when is_integer(v) and v > 0 and
               key in [:max_frame, :log_lines, :max_mailbox, :isolate_after] ->
          {:cont, :ok}

        v when is_integer(v) and v > 0 and v <= 0xFFFFFFFF - 5_000 ->
          {:cont, :ok}

        v when is_integer(v) and v > 0 ->
          {:halt, {:error, too_long(key, v)}}

        v ->
          {:halt,
           {:error,
            "expected #{inspect(key)} to be a positive integer#{unit(key)}, got: #{inspect(v)}"}}
      end
    end)
  end

  defp unit(key) when key in [:max_frame], do: " (bytes)"
  defp unit(key) when key in [:log_lines], do: ""
  defp unit(key) when key in [:max_mailbox], do: " (messages)"
  defp unit(key) when key in [:isolate_after], do: " (crashes)"
  defp unit(_), do: " (milliseconds)"

  @doc """
  The error for a time option past `max_ms/0`.

      iex> Symbiont.Host.Options.too_long(:timeout, 0xFFFFFFFF)
      "expected :timeout to be at most 4294962295 milliseconds (what a timer takes), got: 4294967295"
  """
  @spec too_long(atom, integer) :: String.t()
  def too_long(key, ms),
    do:
      "expected #{inspect(key)} to be at most #{max_ms()} milliseconds (what a timer takes), got: #{ms}"

  defp validate_python(nil) do
    case Symbiont.Config.python_executable() do
      {:ok, path} ->
        {:ok, path}

      {:error, {:python_not_found, p}} ->
        {:error,
         "no Python executable found (tried #{inspect(p)}); set :python or $SYMBIONT_PYTHON"}
    end
  end

  defp validate_python(path) do
    case Symbiont.Config.resolve_executable(path) do
      {:ok, path} ->
        {:ok, path}

      {:error, _} ->
        {:error, "expected :python to be an existing executable, got: #{inspect(path)}"}
    end
  end

  defp validate_cd(cd) when is_binary(cd) do
    cd = Symbiont.Config.resolve(cd)

    if File.dir?(cd),
      do: {:ok, cd},
      else: {:error, "expected :cd to be an existing directory, got: #{inspect(cd)}"}
  end

  defp validate_cd(cd), do: {:error, "expected :cd to be a directory path, got: #{inspect(cd)}"}

  defp validate_paths(nil, cd),
    do: validate_paths(Symbiont.Config.get(:python_path), cd)

  defp validate_paths(paths, cd) when is_list(paths) do
    if Enum.all?(paths, &is_binary/1),
      do: {:ok, Enum.map(paths, &Path.expand(&1, cd))},
      else: {:error, "expected :python_path to be a list of strings, got: #{inspect(paths)}"}
  end

  defp validate_paths(paths, _),
    do: {:error, "expected :python_path to be a list of strings, got: #{inspect(paths)}"}

  defp validate_env(env) when is_list(env) do
    ok? = fn
      {k, v} when is_binary(k) and is_binary(v) ->
        k =~ ~r/\A[^=\x00]+\z/ and not String.contains?(v, <<0>>)

      _ ->
        false
    end

    case Enum.reject(env, ok?) do
      [] ->
        {:ok, env}

      bad ->
        {:error,
         "expected :env to be a list of {name, value} strings (no \"=\" in a name, no NUL byte), got: #{inspect(bad)}"}
    end
  end

  defp validate_env(env),
    do: {:error, "expected :env to be a list of {name, value} strings, got: #{inspect(env)}"}

  defp validate_inherit_env(nil),
    do: validate_inherit_env(Symbiont.Config.get(:inherit_env))

  defp validate_inherit_env(names) when is_list(names) do
    case Enum.reject(names, &(is_binary(&1) and &1 =~ ~r/\A([A-Za-z_][A-Za-z0-9_]*\*?|\*)\z/)) do
      [] ->
        {:ok, names}

      bad ->
        {:error,
         "expected :inherit_env to be a list of variable names (a trailing * matches a prefix), got: #{inspect(bad)} in #{inspect(names)}"}
    end
  end

  defp validate_inherit_env(other),
    do:
      {:error,
       "expected :inherit_env to be a list of variable names (a trailing * matches a prefix), got: #{inspect(other)}"}
end

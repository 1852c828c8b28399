defmodule Symbiont.Config do
  @moduledoc """
  The application's settings (`config :symbiont, key: value`), each validated in one
  place, and where Symbiont finds things at run time (the Python executable, the SDK's
  source directory, the directory relative paths are resolved against).

  `validate/1` checks every key as the application starts: an unknown key (a typo) or a
  value out of its range stops the start with a message naming the key, the value and
  what is allowed. The rest of the code reads settings with `get/1`, which applies the
  same rule (a value put with `Application.put_env/3` later is checked when read).

      iex> Symbiont.Config.validate(heartbeat_ms: 500, standby_hosts: 0)
      :ok
      iex> Symbiont.Config.validate(heartbeat_ms: -1)
      {:error, {:heartbeat_ms, "expected :heartbeat_ms in config :symbiont to be a positive integer (milliseconds, at most 4294962295), got: -1"}}
      iex> Symbiont.Config.validate(hearbeat_ms: 500)
      {:error, {:hearbeat_ms, "config :symbiont has no key :hearbeat_ms (did you mean :heartbeat_ms?)"}}
  """

  # Each key: its default and its rule, a function from the value to `{:ok, value}` or
  # `{:error, message}` (a string: what is allowed, or a whole message from the module
  # that owns the setting). README.md, "Configuration", says what each one does.
  @max_bytes 4_611_686_018_427_387_904

  # Keys whose rule reads more than the value (an agent spec's files and the defaults it
  # takes from other keys; a template's or the conductor's options): checked at every
  # read. The others' outcome is kept for the value it was worked out for (fetch/1).
  @read_each_time [:agents, :templates, :conductor]

  defp schema do
    [
      agents: {[], &agents/1},
      python_path: {[], list_of(&is_binary/1, "a list of directory paths (strings)")},
      python: {nil, nil_or(&is_binary/1, "the path or name of a Python executable")},
      inherit_env:
        {~w(PATH HOME LANG LC_* TZ TMPDIR SYMBIONT_*),
         list_of(
           &(is_binary(&1) and &1 =~ ~r/\A([A-Za-z_][A-Za-z0-9_]*\*?|\*)\z/),
           "a list of variable names (a trailing * matches a prefix)"
         )},
      heartbeat_ms: {1_000, ms()},
      standby_hosts: {1, non_negative("warm processes per launch configuration; 0 turns it off")},
      wasm_agents_per_host: {32, positive("agents")},
      busy_host_utilisation:
        {0.7, number_in(0, 1, "a number from 0.0 to 1.0 (a share of the host's time)")},
      max_wasm_hosts: {8, positive("hosts")},
      reconcile_ms: {1_000, ms()},
      data_dir: {nil, nil_or(&is_binary/1, "a directory path (a string)")},
      status_page: {false, &status_page/1},
      conductor: {[], &conductor/1},
      templates: {[], &templates/1},
      signals: {[], &signals/1},
      max_start_failures: {5, positive("failed starts")},
      probe_timeout_ms: {30_000, ms()},
      max_topics: {1_000, positive("topics")},
      max_queue_bytes: {256 * 1024 * 1024, bytes()},
      max_in_flight_bytes: {64 * 1024 * 1024, bytes()},
      max_topology_edges: {10_000, positive("counters")},
      output_limit: {[], &output_limit/1},
      max_mailbox: {10_000, positive("messages")},
      isolate_after: {2, positive("crashes")},
      isolate_window_ms: {60_000, ms()},
      config_env:
        {:prod, fn env -> if is_atom(env), do: {:ok, env}, else: {:error, "an atom"} end},
      release_include: {[], list_of(&is_binary/1, "a list of paths (strings)")}
    ]
  end

  @doc "The keys of `config :symbiont` and their defaults."
  @spec keys() :: keyword
  def keys, do: for({key, {default, _rule}} <- schema(), do: {key, default})

  @doc """
  Checks every key of `env` (by default the whole `config :symbiont`): `:ok`, or the
  first key that is unknown or out of its range, with a message naming it, its value and
  what is allowed. The application runs it once, as it starts.
  """
  @spec validate(keyword) :: :ok | {:error, {atom, String.t()}}
  def validate(env \\ Application.get_all_env(:symbiont)) do
    rules = schema()

    Enum.find_value(env, :ok, fn {key, value} ->
      case Keyword.fetch(rules, key) do
        {:ok, {_default, rule}} ->
          case check(key, value, rule) do
            {:ok, _} -> nil
            {:error, message} -> {:error, {key, message}}
          end

        :error ->
          {:error, {key, unknown(key, Keyword.keys(rules))}}
      end
    end)
  end

  @doc """
  The value of `key` in `config :symbiont`, or its default, checked by its rule (see
  `validate/1`). Raises `ArgumentError` with the message of `validate/1` when it is out
  of range.

      iex> Symbiont.Config.get(:max_topology_edges)
      10000
  """
  @spec get(atom) :: term
  def get(key) do
    case fetch(key) do
      {:ok, value} -> value
      {:error, error} -> raise ArgumentError, Exception.message(error)
    end
  end

  @doc """
  Like `get/1`, but `{:ok, value}`, or `{:error, %Symbiont.Error{reason: :invalid}}` when
  out of range, with `details` `%{field: key, value: value}`.

      iex> Symbiont.Config.fetch(:max_topology_edges)
      {:ok, 10000}
  """
  @spec fetch(atom) :: {:ok, term} | {:error, Symbiont.Error.t()}
  def fetch(key) when key in @read_each_time, do: check_now(key, get_env(key))

  # The outcome of a rule is kept with the value it was worked out for, so that a hot
  # path (an agent's signals, at every ack) pays a lookup, not the rule: a value put
  # later is a different value, checked when first read.
  def fetch(key) do
    value = get_env(key)

    case :persistent_term.get({__MODULE__, key}, nil) do
      {^value, result} ->
        result

      _ ->
        result = check_now(key, value)
        :persistent_term.put({__MODULE__, key}, {value, result})
        result
    end
  end

  @unset :"$symbiont_config_unset"
  defp get_env(key), do: Application.get_env(:symbiont, key, @unset)

  defp check_now(key, value) do
    {default, rule} = Keyword.fetch!(schema(), key)
    value = if value == @unset, do: default, else: value
    key |> check(value, rule) |> Symbiont.Error.wrap(:invalid, field: key, value: value)
  end

  @doc false
  # `value` for setting `key` given as an option of the module that owns it (a
  # `Symbiont.Manifest` option that overrides `config :symbiont` for that manifest): the
  # same rule as the setting's, `{:ok, value}` or `{:error, message}` naming the option.
  @spec check_option(atom, term) :: {:ok, term} | {:error, String.t()}
  def check_option(key, value) do
    {_default, rule} = Keyword.fetch!(schema(), key)
    check(key, value, rule, "")
  end

  defp check(key, value, rule, where \\ " in config :symbiont") do
    case rule.(value) do
      {:ok, value} ->
        {:ok, value}

      {:error, "expected " <> _ = message} ->
        {:error, message}

      {:error, {:message, message}} ->
        {:error, "config :symbiont, #{key}: #{message}"}

      {:error, allowed} ->
        {:error, "expected #{inspect(key)}#{where} to be #{allowed}, got: #{inspect(value)}"}
    end
  end

  defp unknown(key, known) do
    name = Atom.to_string(key)
    close = Enum.max_by(known, &String.jaro_distance(Atom.to_string(&1), name))

    hint =
      if String.jaro_distance(Atom.to_string(close), name) > 0.8,
        do: " (did you mean #{inspect(close)}?)",
        else: " (known keys: #{Enum.map_join(known, ", ", &inspect/1)})"

    "config :symbiont has no key #{inspect(key)}#{hint}"
  end

  ## Rules

  defp positive(unit) do
    fn
      n when is_integer(n) and n > 0 -> {:ok, n}
      _ -> {:error, "a positive integer (#{unit})"}
    end
  end

  # A time a BEAM timer can wait (Symbiont.Host.max_ms/0).
  defp ms do
    max = Symbiont.Host.max_ms()

    fn
      n when is_integer(n) and n > 0 and n <= max -> {:ok, n}
      _ -> {:error, "a positive integer (milliseconds, at most #{max})"}
    end
  end

  defp non_negative(unit) do
    fn
      n when is_integer(n) and n >= 0 -> {:ok, n}
      _ -> {:error, "a non-negative integer (#{unit})"}
    end
  end

  defp bytes do
    fn
      n when is_integer(n) and n > 0 and n <= @max_bytes -> {:ok, n}
      _ -> {:error, "a positive integer of bytes, at most 2**62"}
    end
  end

  defp number_in(low, high, allowed) do
    fn
      n when is_number(n) and n >= low and n <= high -> {:ok, n}
      _ -> {:error, allowed}
    end
  end

  defp nil_or(ok?, allowed) do
    fn value ->
      if value == nil or ok?.(value), do: {:ok, value}, else: {:error, "nil or " <> allowed}
    end
  end

  defp list_of(ok?, allowed) do
    fn
      list when is_list(list) ->
        if Enum.all?(list, ok?), do: {:ok, list}, else: {:error, allowed}

      _ ->
        {:error, allowed}
    end
  end

  # The rules of the settings that a module of their own owns.
  defp agents(agents) do
    case Symbiont.Manifest.validate(agents) do
      {:ok, specs} -> {:ok, specs}
      {:error, error} -> {:error, {:message, Exception.message(error)}}
    end
  end

  defp signals(opts) do
    case Symbiont.Signals.validate(opts) do
      :ok -> {:ok, opts}
      {:error, error} -> {:error, Exception.message(error)}
    end
  end

  defp status_page(off) when off in [nil, false], do: {:ok, false}

  defp status_page(opts) do
    case Symbiont.StatusPage.validate_options(opts) do
      {:ok, _} -> {:ok, opts}
      {:error, error} -> {:error, Exception.message(error)}
    end
  end

  defp output_limit(opts) when is_list(opts) do
    case Symbiont.Host.Output.validate(opts) do
      {:ok, _} -> {:ok, opts}
      {:error, message} -> {:error, {:message, message}}
    end
  end

  defp output_limit(_opts), do: {:error, "a keyword list (README.md, \"Configuration\")"}

  defp conductor(opts) do
    case Symbiont.Conductor.validate_options(opts) do
      :ok -> {:ok, opts}
      {:error, error} -> {:error, Exception.message(error)}
    end
  end

  defp templates(templates) do
    case Symbiont.Conductor.Template.validate(templates) do
      :ok -> {:ok, templates}
      {:error, error} -> {:error, Exception.message(error)}
    end
  end

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

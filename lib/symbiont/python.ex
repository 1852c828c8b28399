defmodule Symbiont.Python do
  @moduledoc """
  Call Python from Elixir the way ErlPort does: start a Python instance, then call any
  importable function, cast, and exchange plain messages in both directions.

      {:ok, py} = Symbiont.Python.start()
      {:ok, 3.0} = Symbiont.Python.call(py, "math", "sqrt", [9])
      {:error, %Symbiont.Python.Error{type: "ValueError"}} = Symbiont.Python.call(py, "math", "sqrt", [-1])
      :ok = Symbiont.Python.stop(py)

  From Python, `symbiont.erlang.call("Elixir.Enum", "sum", [[1, 2, 3]])` calls back into the
  BEAM (also while an Elixir call is waiting on Python: calls nest, as in ErlPort);
  `symbiont.erlang.cast` and `symbiont.erlang.send(pid_or_name, value)` do the rest.

  Each instance is a `Symbiont.Host`: an OS process supervised under `Symbiont.Hosts`,
  restarted with backoff when it crashes. Terms map to Python as in `docs/PROTOCOL.md` §2:
  strings are UTF-8 `str`, atoms are `symbiont.Atom`, tuples are `tuple`, pids stay pids.

  ## Differences from ErlPort

    * Results are `{:ok, value}` or `{:error, reason}`; `call!/5` raises instead.
    * Every call has a timeout (`:timeout`, default 5 s); when it expires the call is
      cancelled in Python and a late reply is dropped.
    * `print()` in Python does not corrupt the stream: output becomes Logger lines.

  The Python executable is the `:python` option, else the `:python` application env, else
  `$SYMBIONT_PYTHON`, else `.venv/bin/python` of the project (a release's `app/`, README.md
  "Releases"), else `python3`.
  """

  alias Symbiont.Host

  @type instance :: Host.host()

  @max_timeout Host.max_ms()

  @doc """
  Starts a Python instance under `Symbiont.Hosts`. Takes the options of `Symbiont.Host`
  (`:name`, `:python`, `:python_path`, `:cd`, `:env`, `:inherit_env`, `:call_timeout`,
  ...). Returns once the process is spawned; calls made before its handshake completes
  wait for it.

  With `agent:` (an agent spec, see `Symbiont.Agent`), the instance also runs that agent:
  a `Symbiont.Agent.Server` under `Symbiont.Agents`, registered under the instance's
  name; `stop/1` stops it too. The agent is checked first, with this instance's options
  (`Symbiont.Agent.Probe`): one that cannot start is
  `{:error, %Symbiont.Error{reason: :cannot_start}}`, and nothing starts.

      {:ok, py} = Symbiont.Python.start(name: "numbers", python_path: ["lib/py"])
  """
  @spec start(keyword) :: {:ok, pid} | {:error, term}
  def start(opts \\ []) when is_list(opts) do
    {agent, opts} = Keyword.pop(opts, :agent)

    with {:ok, config} <- Host.validate_options(opts),
         {:ok, spec} <- validate_agent(agent),
         :ok <- if(spec, do: Symbiont.Agent.Probe.check(spec, opts), else: :ok),
         opts = Keyword.put(opts, :name, config.name),
         {:ok, pid} <- DynamicSupervisor.start_child(Symbiont.Hosts, {Host, opts}) do
      start_agent(pid, config.name, spec)
    end
  end

  defp start_agent(pid, _name, nil), do: {:ok, pid}

  defp start_agent(pid, name, spec) do
    child = {Symbiont.Agent.Server, id: name, host: name, spec: spec}

    case DynamicSupervisor.start_child(Symbiont.Agents, child) do
      {:ok, _} ->
        {:ok, pid}

      {:error, reason} ->
        DynamicSupervisor.terminate_child(Symbiont.Hosts, pid)
        {:error, reason}
    end
  end

  defp validate_agent(nil), do: {:ok, nil}

  defp validate_agent(agent) do
    case Symbiont.Agent.validate_spec(agent) do
      {:ok, spec} -> {:ok, spec}
      {:error, error} -> {:error, ArgumentError.exception(Exception.message(error))}
    end
  end

  @doc "Stops a Python instance: its process gets EOF, then SIGKILL after a grace period."
  @spec stop(instance) :: :ok | {:error, term}
  def stop(instance), do: Host.stop(instance)

  @doc """
  Calls `module.function(*args)` in Python and returns its result.

  `module` is an importable module (`"os.path"`), `function` an attribute of it (dots
  allowed: `"Path.home"`). Options: `:timeout` in ms (default: the instance's
  `:call_timeout`).

      {:ok, "/tmp/x"} = Symbiont.Python.call(py, "os.path", "join", ["/tmp", "x"])

  Errors: `%Symbiont.Python.Error{}` for a Python exception, `:timeout`,
  `{:host_down, reason}` when the process died during the call, `{:no_host, name}`,
  `{:frame_too_large, size, max}` and `{:unencodable, term}` for arguments.

  The arguments are encoded in the calling process, so that a large call does not hold
  up the instance's owner (and every agent it serves) while it is encoded.
  """
  @spec call(instance, String.t() | atom, String.t() | atom, list, keyword) ::
          {:ok, term} | {:error, term}
  def call(instance, module, function, args \\ [], opts \\ [])
      when (is_binary(module) or is_atom(module)) and (is_binary(function) or is_atom(function)) and
             is_list(args) do
    timeout = Keyword.get(opts, :timeout)

    # A timer takes at most 2^32-1 ms, and the owner's own wait is 5 s longer (a bad
    # value would crash the owner, with every call it runs; it may come from Python,
    # through symbiont.erlang.call).
    cond do
      timeout == nil or (is_integer(timeout) and timeout > 0 and timeout <= @max_timeout) ->
        :ok

      is_integer(timeout) and timeout > 0 ->
        raise ArgumentError, Host.too_long(:timeout, timeout)

      true ->
        raise ArgumentError,
              "expected :timeout to be a positive integer (milliseconds), got: #{inspect(timeout)}"
    end

    Host.call(instance, to_string(module), to_string(function), args, timeout)
  end

  @doc """
  Like `call/5` but returns the value or raises: `Symbiont.Python.Error` for a Python
  exception, `RuntimeError` otherwise.
  """
  @spec call!(instance, String.t() | atom, String.t() | atom, list, keyword) :: term
  def call!(instance, module, function, args \\ [], opts \\ []) do
    case call(instance, module, function, args, opts) do
      {:ok, value} ->
        value

      {:error, %Symbiont.Python.Error{} = error} ->
        raise error

      {:error, reason} ->
        raise RuntimeError, "Python call #{module}.#{function} failed: #{inspect(reason)}"
    end
  end

  @doc """
  Runs `module.function(*args)` in Python without waiting for it; a failure is logged.
  """
  @spec cast(instance, String.t() | atom, String.t() | atom, list) :: :ok | {:error, term}
  def cast(instance, module, function, args \\ []) when is_list(args) do
    Host.cast(instance, {:cast, to_string(module), to_string(function), args})
  end

  @doc """
  Sends `message` to the instance's message handler, set in Python with
  `symbiont.erlang.set_message_handler(fn)` (ErlPort's `python:cast/2`).
  """
  @spec send(instance, term) :: :ok | {:error, term}
  def send(instance, message), do: Host.cast(instance, {:send, nil, message})
end

defmodule Symbiont.Host do
  @moduledoc """
  The owner of one host OS process: a GenServer holding a Port to `python -m symbiont.host`.

  It speaks `docs/PROTOCOL.md` with the process and outlives it: when the process exits,
  crashes or breaks the protocol, the owner logs why (exit status and the last lines the
  process printed), and who is charged with it (the agent whose code was running, read
  from the process's flight recorder, PROTOCOL.md §11.1: see "Blame" in
  `Symbiont.Manifest`), fails the calls that were running, and starts a new process with
  backoff (the first restart is immediate, repeated crashes wait 10 ms, 20 ms, ... up to
  5 s). Calls, casts and agent deliveries that arrive while the process is (re)starting
  wait for it, so nothing accepted is lost across a restart. A process that sends nothing
  for three heartbeats is restarted the same way (`:heartbeat_ms`, PROTOCOL.md §11).

  A (re)start takes a warm standby process when `Symbiont.Host.Standby` has one started
  the same way (same executable, directory and environment): Python is already up and
  has imported the modules of this host's agents, so the host serves again in
  milliseconds. Otherwise the process starts cold.

  A host runs any number of agents (PROTOCOL.md §8), each a `Symbiont.Agent.Server` of
  its own that attaches to the host by name and gets a slot in its process. The owner
  hands each agent the frames of its slot and tells it when the process goes down (and
  whether it is charged with that, or moved to a host of its own) and when a new one is
  ready; the agents write their deliveries to the port themselves.

  Most code uses it through `Symbiont.Python` (ErlPort-style calls) or the agents of the
  manifest; `start_link/1` is the child spec entry point under `Symbiont.Hosts`.

  ## Options

    * `:name` - a string (or atom) naming the host in logs and registering it, so that it
      can be addressed by name. Default: `"python-N"`.
    * `:python` - the Python executable. Default: see `Symbiont.Python`.
    * `:python_path` - directories prepended to the host's `sys.path`, relative ones
      resolved against `:cd`. Default: the `:python_path` application env.
    * `:cd` - the working directory of the process. Default: the project's directory
      (a release's `app/`, README.md "Releases"); a relative one is resolved against it.
    * `:env` - environment variables to set, a list of `{name, value}` strings.
    * `:inherit_env` - which variables of the BEAM's environment the process inherits, by
      name; a name ending in `*` is a prefix (`"LC_*"`), and `["*"]` inherits them all.
      Everything else is left out (docs/SECURITY.md). Symbiont sets `PYTHONPATH`,
      `PYTHONUNBUFFERED` and `PYTHONDONTWRITEBYTECODE` itself, and `:env` comes on top.
      Default: the `:inherit_env` application env, else
      `#{inspect(["PATH", "HOME", "LANG", "LC_*", "TZ", "TMPDIR", "SYMBIONT_*"])}`.
    * `:call_timeout` - default timeout of calls, in ms. Default: 5000.
    * `:start_timeout` - how long the process may take to answer the handshake. Default: 10000.
    * `:max_frame` - the largest frame accepted from the process, in bytes. Default: 64 MiB.
    * `:backoff_max` - the longest wait between restarts, in ms. Default: 5000.
    * `:log_lines` - how many of the last output lines a crash report keeps. Default: 20.
    * `:grace` - how long a stopped process may take to exit after its input is closed,
      in ms, before it is killed. Default: 2000.
    * `:heartbeat_ms` - how often the owner pings a ready process (PROTOCOL.md §11). A
      process that sends no complete frame for three intervals is unresponsive (frozen,
      stuck in native code that holds Python's GIL, or stuck after the start of a frame):
      it is killed and restarted like after a crash, and its agents' un-acked deliveries
      are retried. Default: the `:heartbeat_ms`
      application env, else 1000.
    * `:isolate_after`, `:isolate_window_ms` - an agent of this host charged with that
      many of its crashes within that many ms, while it shared the host with others, is
      moved to a host of its own, started with these options (see "Blame" in
      `Symbiont.Manifest`). Default: the application env of the same names, else 2 and
      60 000.
    * `:output_limit` - how much of the process's output (stdout, stderr, Python
      `logging`, a Wasm module's log) reaches the log: `lines_per_s` (default 100),
      `burst_lines` (1000), `bytes_per_s` (65536), `burst_bytes` (1048576), `max_line`
      (bytes, 16384: a longer line is cut, with a marker) and `summary_ms` (5000: what
      was dropped is said in one line per that many ms, "dropped 123,456 lines (45.2 MiB)
      of output in the last 5.0 s"). The host process keeps to it (PROTOCOL.md §7); the
      owner drops what goes over twice the limit. Keys not given come from the
      `:output_limit` application env, then the defaults.
    * `:max_mailbox` - how many messages of the process's port may wait in the owner's
      mailbox. A port has no input flow control: a process that writes frames it needs
      no credit for (pongs nobody asked for, replies to calls that timed out, acks of
      old deliveries, log frames past its output limit) faster than the owner decodes
      them would grow the owner's mailbox without bound. Past this many, the process is
      stopped as a protocol error ("flooding", PROTOCOL.md §9) and restarted like after
      a crash. Each message holds at most 64 KiB (what a port reads at once), so the
      default bounds them to some 640 MiB; an honest host, which keeps to its windows
      (§8.2), stays far below (a few hundred in the flood tests and benchmarks).
      Default: the `:max_mailbox` application env, else 10_000.
  """
  use GenServer, restart: :transient

  require Logger

  alias Symbiont.Host.{Blackbox, Blame, Credit, Framer, Out, Output, Protocol, Standby, Usage}
  alias Symbiont.MsgPack

  @typedoc "A host: its pid or the name it was started with."
  @type host :: pid | String.t()

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
  # Intervals without a frame after which a process is unresponsive.
  @missed_beats 3
  # A process that stayed up this long before crashing restarts without delay.
  @stable_ms 5_000
  @agent_frames [:agent_ready, :agent_failed, :ack, :nack, :publish, :health]
  # Calls from the process to the node running at once (PROTOCOL.md §4.1): each waits in
  # a thread of the process, so only a runaway one gets near.
  @max_calls 10_000
  # How many port messages go by between two counts of the messages waiting in the
  # owner's mailbox while it holds more than :max_mailbox (Symbiont.Config).
  @recount_every 64

  ## Public API (internal to Symbiont: users go through Symbiont.Python and Symbiont)

  @doc false
  def child_spec(opts) do
    %{id: __MODULE__, start: {__MODULE__, :start_link, [opts]}, restart: :transient}
  end

  @doc """
  Starts a host owner linked to the caller. Raises `ArgumentError` on invalid options;
  see `validate_options/1`.
  """
  @spec start_link(keyword) :: GenServer.on_start()
  def start_link(opts) when is_list(opts) do
    case validate_options(opts) do
      {:ok, config} -> GenServer.start_link(__MODULE__, config, name: via(config.name))
      {:error, error} -> raise error
    end
  end

  @doc """
  Validates host options once, at the edge.

      iex> {:error, %ArgumentError{message: msg}} = Symbiont.Host.validate_options(call_timeout: -1)
      iex> msg
      "expected :call_timeout to be a positive integer (milliseconds), got: -1"
  """
  @spec validate_options(keyword) :: {:ok, map} | {:error, Exception.t()}
  def validate_options(opts) when is_list(opts) do
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

  @doc "The pid of a host given by pid or name, or `nil`."
  @spec whereis(host) :: pid | nil
  def whereis(pid) when is_pid(pid), do: pid

  def whereis(name) when is_binary(name) do
    case Registry.lookup(Symbiont.Host.Registry, name) do
      [{pid, _}] -> pid
      [] -> nil
    end
  end

  def whereis(name) when is_atom(name), do: whereis(Atom.to_string(name))

  @doc """
  The OS pid of the process host `name` runs now, or `nil` (none running, or no such
  host): read from its registry entry, which its owner keeps up to date, with no call to
  the owner (the conductor reads each host's memory every tick: `Symbiont.Signals`).
  """
  @spec os_pid(String.t()) :: non_neg_integer | nil
  def os_pid(name) when is_binary(name) do
    case Registry.lookup(Symbiont.Host.Registry, name) do
      [{_pid, os_pid}] -> os_pid
      [] -> nil
    end
  end

  # Its registry entry holds the OS pid of its process (os_pid/1).
  defp advertise(state, os_pid) do
    Registry.update_value(Symbiont.Host.Registry, state.name, fn _ -> os_pid end)
    state
  end

  @doc false
  @spec call(host, String.t(), String.t(), list, timeout | nil) :: {:ok, term} | {:error, term}
  def call(host, module, function, args, timeout) do
    with {:ok, pid} <- lookup(host) do
      safe_call(pid, {:call, module, function, args, timeout}, timeout)
    end
  end

  @doc false
  @spec cast(host, term) :: :ok | {:error, term}
  def cast(host, request) do
    with {:ok, pid} <- lookup(host), do: GenServer.cast(pid, request)
  end

  @doc false
  # The host's state, with `agents` (the info of each agent it runs) and, for a host that
  # runs exactly one, that one as `agent` (else nil).
  @spec info(host) :: {:ok, map} | {:error, term}
  def info(host) do
    with {:ok, info} <- own_info(host) do
      agents = for id <- info.agents, {:ok, a} <- [Symbiont.Agent.Server.info(id)], do: a
      {:ok, Map.merge(info, %{agents: agents, agent: if(match?([_], agents), do: hd(agents))})}
    end
  end

  @doc false
  # The host's own state, its agents by id only (Symbiont.hosts/0 adds their view from
  # Symbiont.Observation, without asking them).
  @spec own_info(host) :: {:ok, map} | {:error, term}
  def own_info(host) do
    with {:ok, pid} <- lookup(host), do: safe_call(pid, :info, 5_000)
  end

  @doc false
  # A host of its own for agent `id`, started under Symbiont.Hosts with the options of the
  # host `like` (its name or pid: the shared host it leaves), named like the replica, or
  # after it and a number when a host has that name. Where an agent isolated after
  # crashing its shared host goes (see "Blame" in Symbiont.Manifest), and one rerouted
  # away from its co-tenants (Symbiont.Placement.reroute/2).
  @spec start_own(host | keyword, String.t()) :: {:ok, String.t()} | {:error, term}
  def start_own(like, id) when is_list(like) do
    name = if whereis(id) == nil, do: id, else: "#{id}~#{System.unique_integer([:positive])}"

    case DynamicSupervisor.start_child(
           Symbiont.Hosts,
           {__MODULE__, Keyword.put(like, :name, name)}
         ) do
      {:ok, _pid} -> {:ok, name}
      {:error, _} = error -> error
    end
  end

  def start_own(like, id) do
    with {:ok, pid} <- lookup(like),
         {:ok, opts} <- safe_call(pid, :options, 5_000),
         do: start_own(opts, id)
  end

  @doc false
  # An agent server takes a slot in the host (see Symbiont.Agent.Server): the port comes
  # back when the process is ready, otherwise {:host_up, host, port} follows; and the
  # largest frame the process accepts (the host's :max_frame, which it adopts, §3).
  # `module` is the Python module the agent runs: a warm standby for this host imports
  # it before it is needed (Symbiont.Host.Standby).
  @spec attach(pid, String.t(), String.t() | nil) ::
          {:ok, pos_integer, port | nil, pos_integer} | {:error, term}
  def attach(host, id, module \\ nil), do: safe_call(host, {:attach, self(), id, module}, 5_000)

  @doc false
  # An agent leaves `slot` (it moved to another: Symbiont.Agent.Server.upgrade/3).
  @spec detach(pid, pos_integer) :: :ok
  def detach(host, slot), do: GenServer.cast(host, {:detach, slot})

  @doc """
  Restarts the host's OS process on request (the conductor's `restart`): it is killed and
  started again like after a crash (its agents get their un-acked deliveries again), but
  the log says why and no `restart` remediation by the supervisor is published for it.
  `{:error, :not_running}` while no process runs.
  """
  @spec restart(host, String.t()) :: :ok | {:error, term}
  def restart(host, reason) when is_binary(reason) do
    with {:ok, pid} <- lookup(host), do: safe_call(pid, {:restart, reason}, 5_000)
  end

  @doc false
  # Restarts the process behind `port` (if it is still the current one): an agent whose
  # handler does not stop asks for it (see :handler_timeout in Symbiont.Agent).
  @spec restart(pid, port | nil, {:stalled, String.t(), pos_integer}) :: :ok
  def restart(host, port, reason), do: GenServer.cast(host, {:restart_process, port, reason})

  @doc false
  # Stops the host and the agents it runs that live under Symbiont.Agents.
  @spec stop(host) :: :ok | {:error, term}
  def stop(host) do
    with {:ok, pid} <- lookup(host) do
      with {:ok, %{agents: ids}} <- safe_call(pid, :info, 5_000) do
        for id <- ids,
            agent = Symbiont.Agent.Server.whereis(id),
            agent != nil,
            do: DynamicSupervisor.terminate_child(Symbiont.Agents, agent)
      end

      DynamicSupervisor.terminate_child(Symbiont.Hosts, pid)
    end
  end

  defp lookup(host) do
    case whereis(host) do
      nil -> {:error, {:no_host, host}}
      pid -> {:ok, pid}
    end
  end

  defp safe_call(pid, request, timeout) do
    # The owner answers every call itself (its timers fire first); the margin only guards
    # against an owner that is gone or wedged.
    GenServer.call(pid, request, if(is_integer(timeout), do: timeout + 5_000, else: 60_000))
  catch
    :exit, {reason, _} -> {:error, {:host_down, reason}}
  end

  defp via(name), do: {:via, Registry, {Symbiont.Host.Registry, name}}

  ## Option validation

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

  @doc false
  # The longest time in ms a caller may give: a BEAM timer takes 2^32-1, and the wait for
  # the owner's answer is 5 s longer than a call's timeout (safe_call/3).
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

  @doc false
  # The error for a time option past max_ms/0.
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

  # The process's environment: ours and :env on top of what :inherit_env lets through of
  # the BEAM's; Port.open only adds to the BEAM's, so the rest is unset explicitly.
  defp environment(c) do
    ours = [
      {"PYTHONPATH", Enum.join([Symbiont.Config.python_src() | c.python_path], ":")},
      {"PYTHONUNBUFFERED", "1"},
      {"PYTHONDONTWRITEBYTECODE", "1"} | c.env
    ]

    set = MapSet.new(ours, &elem(&1, 0))

    unset =
      for {name, _} <- System.get_env(),
          not MapSet.member?(set, name) and not inherited?(name, c.inherit_env),
          do: {String.to_charlist(name), false}

    Enum.map(ours, fn {k, v} -> {String.to_charlist(k), String.to_charlist(v)} end) ++ unset
  end

  defp inherited?(name, patterns) do
    Enum.any?(patterns, fn pattern ->
      case String.split_at(pattern, -1) do
        {prefix, "*"} -> String.starts_with?(name, prefix)
        _ -> name == pattern
      end
    end)
  end

  ## GenServer

  @impl true
  def init(config) do
    Process.flag(:trap_exit, true)

    state = %{
      config: config,
      name: config.name,
      status: :starting,
      port: nil,
      os_pid: nil,
      framer: Framer.new(config.max_frame),
      peer_max_frame: config.max_frame,
      info: %{},
      started_at: nil,
      ready_at: nil,
      next_id: 0,
      pending: %{},
      waiting: :queue.new(),
      tasks: %{},
      out: Out.new(),
      # The agents it runs: slot => {pid, id, monitor}; slots are never reused.
      slots: %{},
      next_slot: 1,
      logs: :queue.new(),
      log_count: 0,
      # What its processes print, bounded (Symbiont.Host.Output): it outlives them.
      output: Output.new(config.output_limit, 2, System.monotonic_time(:millisecond)),
      crashes: 0,
      consecutive: 0,
      last_crash: nil,
      # The current process's flight recorder (Symbiont.Host.Blackbox), and who was
      # charged with the crashes of this host (Symbiont.Host.Blame).
      box: nil,
      blame: Blame.new(config.isolate_after, config.isolate_window_ms),
      # How its process's time goes to its agents (Symbiont.Host.Usage, PROTOCOL.md §11.2).
      usage: Usage.new(config.heartbeat_ms),
      # Why the process was killed on request (restart/2), until it is down.
      restart_reason: nil,
      # When the process last sent anything (monotonic ms), and the last ping's number.
      heard_at: nil,
      beat: 0,
      # Port messages since the owner last counted those waiting in its mailbox (see
      # flooding/1).
      since_count: @recount_every,
      # Flow control (PROTOCOL.md §8.2, Symbiont.Host.Credit), for a process that announced
      # it: what it sent of each window and was not given back yet (nil: no windows);
      # and the casts and messages handled but not given back yet.
      credit: nil,
      own: {0, 0},
      # Whether the current process was a warm standby (Symbiont.Host.Standby), and the
      # modules of the agents it ran, for the standby to import ahead.
      standby: false,
      preload: [],
      launch_key: nil
    }

    {:ok, state, {:continue, :open}}
  end

  @impl true
  def handle_continue(:open, state), do: Out.reply({:noreply, open(state)})

  # A warm standby process when the pool has one for this launch (Symbiont.Host.Standby),
  # else a cold start.
  defp open(%{config: c} = state) do
    key = state.launch_key || {c.python, c.cd, environment(c)}

    try do
      case Standby.take(key, state.preload) do
        {:ok, port} ->
          Process.link(port)
          {port, true}

        :none ->
          {Standby.open(key), false}
      end
    rescue
      e in ErlangError -> crashed(state, {:spawn_failed, e.original})
    else
      {port, standby?} ->
        os_pid = port |> Port.info(:os_pid) |> elem(1)
        advertise(state, os_pid)
        Process.send_after(self(), {:start_timeout, port}, c.start_timeout)

        state = %{
          state
          | port: port,
            out: Out.to(state.out, port),
            os_pid: os_pid,
            box: Blackbox.name(),
            status: :starting,
            standby: standby?,
            launch_key: key,
            framer: Framer.new(c.max_frame),
            started_at: System.monotonic_time(:microsecond)
        }

        send_frame(state, ["init", Protocol.version(), init_options(state)])
    end
  end

  defp init_options(%{config: c} = state) do
    options = %{
      "name" => c.name,
      "node" => Atom.to_string(node()),
      "max_frame" => c.max_frame,
      "python_path" => c.python_path,
      "output_limit" => Output.to_wire(c.output_limit),
      "window" => Credit.window(),
      # Agents' health reports come in health frames (PROTOCOL.md §8.3).
      "health" => true,
      # Each slot's busy time comes with the pongs (PROTOCOL.md §11.2).
      "busy" => true,
      # Log frames may carry a record's fields (§7).
      "log_fields" => true
    }

    case Blackbox.path(state.box) do
      nil -> options
      path -> Map.put(options, "blackbox", path)
    end
  end

  defp call_msg({:call, m, f, args, timeout}, from, state) do
    id = state.next_id
    state = %{state | next_id: id + 1}

    case encode_frame(state, ["call", id, m, f, args]) do
      {:ok, frame} ->
        timer =
          Process.send_after(self(), {:call_timeout, id}, timeout || state.config.call_timeout)

        if state.status == :ready do
          state = emit(state, frame)
          {:noreply, put_in(state.pending[id], {from, timer, true})}
        else
          state = %{state | waiting: :queue.in({id, frame}, state.waiting)}
          {:noreply, put_in(state.pending[id], {from, timer, false})}
        end

      {:error, reason} ->
        {:reply, {:error, reason}, state}
    end
  end

  defp call_msg(:info, _from, state), do: {:reply, {:ok, public_info(state)}, state}
  defp call_msg(:options, _from, state), do: {:reply, {:ok, state.config.opts}, state}

  defp call_msg({:restart, _reason}, _from, %{os_pid: nil} = state),
    do: {:reply, {:error, :not_running}, state}

  defp call_msg({:restart, reason}, _from, state) do
    Symbiont.Host.Reaper.kill(state.os_pid)
    {:reply, :ok, %{state | restart_reason: reason}}
  end

  defp call_msg({:attach, pid, id, module}, _from, state) do
    slot = state.next_slot
    state = preload(state, module)
    slots = Map.put(state.slots, slot, {pid, id, Process.monitor(pid)})
    port = if state.status == :ready, do: state.port

    {:reply, {:ok, slot, port, state.config.max_frame},
     %{state | slots: slots, next_slot: slot + 1}}
  end

  defp preload(state, module) when is_binary(module) and length(state.preload) < 16 do
    if module in state.preload do
      state
    else
      preload = [module | state.preload]
      if state.launch_key, do: Standby.learn(state.launch_key, preload)
      %{state | preload: preload}
    end
  end

  defp preload(state, _module), do: state

  defp cast_msg({:cast, m, f, args}, state),
    do: {:noreply, send_or_queue(state, ["cast", m, f, args])}

  defp cast_msg({:send, dest, value}, state),
    do: {:noreply, send_or_queue(state, ["msg", dest, value])}

  defp cast_msg({:restart_process, port, reason}, %{port: port} = state) when port != nil,
    do: {:noreply, crashed(state, reason)}

  defp cast_msg({:restart_process, _old_port, _reason}, state), do: {:noreply, state}

  defp cast_msg({:detach, slot}, state) do
    case Map.pop(state.slots, slot) do
      {nil, _} ->
        {:noreply, state}

      {{_pid, id, ref}, slots} ->
        Process.demonitor(ref, [:flush])
        {:noreply, stop_slot(%{state | slots: slots}, slot, id)}
    end
  end

  # An agent server has handled publishes of its slot in this process (§8.2).
  defp cast_msg({:credit, port, slot, frames, bytes}, %{port: port, credit: %{} = c} = state)
       when is_map_key(c, slot),
       do: {:noreply, give_back(state, slot, frames, bytes)}

  defp cast_msg({:credit, _port, _slot, _frames, _bytes}, state), do: {:noreply, state}

  defp send_or_queue(state, frame) do
    case encode_frame(state, frame) do
      {:ok, iodata} ->
        if state.status == :ready do
          emit(state, iodata)
        else
          %{state | waiting: :queue.in({nil, iodata}, state.waiting)}
        end

      {:error, reason} ->
        Logger.error(
          "dropped #{hd(frame)} to host #{inspect(state.name)}: #{inspect(reason)}",
          meta(state)
        )

        state
    end
  end

  # A sign of life is a complete frame (PROTOCOL.md §11), not a byte: a process stuck
  # after the start of one would otherwise seem alive for as long as bytes trickle in.
  defp info({port, {:data, chunk}}, %{port: port} = state) do
    with {:ok, state} <- flooding(state),
         {:ok, payloads, framer} <- Framer.feed(state.framer, chunk) do
      case payloads do
        [] ->
          {:noreply, %{state | framer: framer}}

        payloads ->
          state = %{state | framer: framer, heard_at: System.monotonic_time(:millisecond)}
          {:noreply, handle_payloads(payloads, state)}
      end
    else
      {:error, reason} -> {:noreply, protocol_error(state, reason)}
    end
  end

  defp info({port, {:exit_status, _}}, %{port: port, restart_reason: why} = state)
       when why != nil do
    {:noreply, crashed(%{state | restart_reason: nil}, {:restarted, why})}
  end

  defp info({port, {:exit_status, status}}, %{port: port} = state) do
    {:noreply, crashed(state, {:exit, status})}
  end

  # Killed on request (restart/2): whichever news of its death comes first (a write that
  # found the pipe closed, often, before the exit status) is the restart, never a crash.
  defp info({:EXIT, port, reason}, %{port: port, restart_reason: why} = state)
       when reason != :normal and why != nil do
    {:noreply, crashed(%{state | restart_reason: nil}, {:restarted, why})}
  end

  defp info({:EXIT, port, reason}, %{port: port} = state) when reason != :normal do
    {:noreply, crashed(state, {:port_closed, reason})}
  end

  defp info({:EXIT, _port_or_task, _}, state), do: {:noreply, state}

  defp info({:call_timeout, id}, state) do
    case Map.pop(state.pending, id) do
      {nil, _} ->
        {:noreply, state}

      {{from, _timer, sent?}, pending} ->
        state =
          if sent? and state.status == :ready, do: send_frame(state, ["cancel", id]), else: state

        GenServer.reply(from, {:error, :timeout})
        {:noreply, %{state | pending: pending}}
    end
  end

  defp info({:start_timeout, port}, %{port: port, status: :starting} = state) do
    {:noreply, protocol_error(state, {:start_timeout, state.config.start_timeout})}
  end

  defp info({:start_timeout, _}, state), do: {:noreply, state}

  defp info({:heartbeat, port}, %{port: port, status: :ready} = state) do
    every = state.config.heartbeat_ms
    silent = System.monotonic_time(:millisecond) - state.heard_at

    if silent >= @missed_beats * every do
      # A frozen process would not read its EOF: no grace period.
      Symbiont.Host.Reaper.kill(state.os_pid)
      {:noreply, crashed(state, {:unresponsive, silent})}
    else
      Process.send_after(self(), {:heartbeat, port}, every)
      beat = state.beat + 1
      {:noreply, send_frame(%{state | beat: beat}, ["ping", beat])}
    end
  end

  defp info({:heartbeat, _old_port}, state), do: {:noreply, state}

  defp info(
         {:restart, n},
         %{crashes: n, status: :backoff, last_crash: %{reason: {:restarted, _}}} = state
       ),
       do: {:noreply, open(state)}

  defp info({:restart, n}, %{crashes: n, status: :backoff} = state) do
    crash = state.last_crash

    # The agent when the host runs one (a Python agent's host), else the host alone.
    agent = with [id] <- agent_ids(state), do: id, else: (_ -> nil)

    # The process first: the remediation event can wait a few microseconds.
    state = open(state)

    Symbiont.Remediation.publish("restart", agent, format_crash_reason(crash.reason),
      by: "supervisor",
      host: state.name,
      evidence: %{
        "restarts" => n,
        "uptime_ms" => crash.uptime_ms,
        "status" => crash.status,
        # The agent charged with the crash (Symbiont.Host.Blame), or nil.
        "suspect" => crash.suspect
      }
    )

    {:noreply, state}
  end

  defp info({:restart, _}, state), do: {:noreply, state}

  defp info({:erlang_result, port, id, result}, %{port: port} = state) do
    state = %{state | tasks: Map.delete(state.tasks, id)}

    frame =
      case result do
        {:ok, value} -> ["reply", id, value]
        {:error, error} -> ["error", id, error]
      end

    state =
      case encode_frame(state, frame) do
        {:ok, iodata} ->
          emit(state, iodata)

        {:error, reason} ->
          error = %{
            "type" => "error",
            "message" => "cannot encode the result: #{inspect(reason)}",
            "traceback" => ""
          }

          send_frame(state, ["error", id, error])
      end

    {:noreply, state}
  end

  defp info({:erlang_result, _old_port, _id, _result}, state), do: {:noreply, state}

  # A cast of this process has run (§8.2).
  defp info({:cast_done, port, size}, %{port: port, credit: %{}} = state),
    do: {:noreply, handled_own(state, 1, size)}

  defp info({:cast_done, _old_port, _size}, state), do: {:noreply, state}

  # An agent went away: its slot in the process is freed (never reused).
  defp info({:DOWN, _ref, :process, pid, _reason}, state) do
    case Enum.find(state.slots, fn {_slot, {p, _id, _ref}} -> p == pid end) do
      nil ->
        {:noreply, state}

      {slot, {_pid, id, _ref}} ->
        {:noreply, stop_slot(%{state | slots: Map.delete(state.slots, slot)}, slot, id)}
    end
  end

  defp info(:output_summary, state) do
    {text, output} = Output.summary(state.output, System.monotonic_time(:millisecond))
    if text, do: Logger.warning("host #{inspect(state.name)} #{text}", meta(state))
    {:noreply, %{state | output: output}}
  end

  defp info(msg, state) do
    Logger.debug("host #{inspect(state.name)} ignored #{inspect(msg, limit: 5)}", meta(state))
    {:noreply, state}
  end

  @impl true
  def terminate(reason, state) do
    close_port(state)
    Blackbox.close(state.box)
    Usage.forget(state.name)
    fail_pending(state, {:host_down, :stopped})

    uptime =
      if state.status == :ready,
        do: System.monotonic_time(:millisecond) - state.ready_at,
        else: 0

    Symbiont.Telemetry.execute([:symbiont, :host, :stop], %{uptime_ms: uptime}, %{
      host: state.name,
      agents: agent_ids(state),
      os_pid: state.os_pid,
      reason: reason
    })
  end

  ## Frames from the host

  defp handle_payloads([], state), do: state

  defp handle_payloads([payload | rest], state) do
    with {:ok, frame} <- Protocol.decode(payload),
         {:ok, state} <- charge(state, frame, byte_size(payload)) do
      case handle_frame(frame, byte_size(payload), state) do
        {:error, reason, state} -> protocol_error(state, reason)
        state -> handle_payloads(rest, settle(state, frame, byte_size(payload)))
      end
    else
      {:error, reason} -> protocol_error(state, reason)
    end
  end

  # PROTOCOL.md §8.2: what a process sends of a window is counted as it arrives (a
  # process past its window is a protocol error); publishes of a slot no agent runs any
  # more are dropped uncounted.
  defp charge(%{credit: nil} = state, _frame, _size), do: {:ok, state}

  defp charge(state, {:publish, slot, topic, payload, _id}, _size) do
    if Map.has_key?(state.slots, slot),
      do: charge_slot(state, slot, Credit.publish_cost(topic, payload)),
      else: {:ok, state}
  end

  # An agent's health report (§8.3) costs the size of its frame.
  defp charge(state, {:health, slot, _kind, _reason, _metrics}, size) do
    if Map.has_key?(state.slots, slot),
      do: charge_slot(state, slot, size),
      else: {:ok, state}
  end

  defp charge(state, frame, size) when elem(frame, 0) in [:cast, :msg],
    do: charge_slot(state, 0, size)

  defp charge(state, _frame, _size), do: {:ok, state}

  defp charge_slot(state, slot, cost) do
    with {:ok, credit} <- Credit.charge(state.credit, slot, cost),
         do: {:ok, %{state | credit: credit}}
  end

  # A message is handled once sent; a cast once it has run (its task says so).
  defp settle(%{credit: %{}} = state, {:msg, _, _}, size), do: handled_own(state, 1, size)
  defp settle(state, _frame, _size), do: state

  # Casts and messages handled: given back a quarter window at a time.
  defp handled_own(state, n, size) do
    {frames, bytes} = state.own
    frames = frames + n
    bytes = bytes + size

    if Credit.due?(frames, bytes),
      do: give_back(%{state | own: {0, 0}}, 0, frames, bytes),
      else: %{state | own: {frames, bytes}}
  end

  # Written at once: a host may be waiting for it.
  defp give_back(state, slot, frames, bytes) do
    state = %{state | credit: Credit.give_back(state.credit, slot, frames, bytes)}
    state = send_frame(state, ["credit", slot, frames, bytes])
    %{state | out: Out.flush(state.out)}
  end

  # A cast's share of the window (its frame's size) goes back once it has run (§8.2).
  defp handle_frame({:cast, m, f, args}, size, %{status: :ready} = state) do
    name = state.name
    host = self()
    done = if state.credit, do: {:cast_done, state.port, size}

    Task.Supervisor.start_child(Symbiont.TaskSupervisor, fn ->
      with {:error, error} <- Symbiont.Host.Erlang.apply(m, f, args) do
        Logger.warning("cast from host #{inspect(name)} to #{m}.#{f} failed: #{error["message"]}")
      end

      if done, do: send(host, done)
    end)

    state
  end

  # Its agent server gives the report's share of the window back: it needs its size.
  defp handle_frame({:health, slot, kind, reason, metrics}, size, state),
    do: handle_frame({:health, slot, kind, reason, metrics, size}, state)

  defp handle_frame(frame, _size, state), do: handle_frame(frame, state)

  defp handle_frame({:log, level, message}, state), do: log_line(state, level, message)

  defp handle_frame({:log, level, message, fields}, state),
    do: log_line(state, level, message, fields)

  # Any complete frame counts as a sign of life (heard_at); a pong needs nothing more,
  # unless it says how the process's time went (§11.2): Symbiont.Host.Usage.
  defp handle_frame({:pong, _beat}, state), do: state

  defp handle_frame({:pong, _beat, busy}, state) do
    ids = Map.new(state.slots, fn {slot, {_pid, id, _ref}} -> {slot, id} end)
    now = System.monotonic_time(:microsecond)
    put_usage(%{state | usage: Usage.add(state.usage, now, busy, ids)})
  end

  defp handle_frame({:ready, version, info}, %{status: :starting} = state) do
    if version == Protocol.version() do
      ready(state, info)
    else
      {:error, {:version, version}, state}
    end
  end

  defp handle_frame({:fatal, error}, %{status: :starting} = state) do
    Logger.error(
      "host #{inspect(state.name)} could not start: #{format_remote_error(error)}",
      meta(state)
    )

    log_line(state, :error, "fatal: " <> to_string(error["message"] || ""))
  end

  defp handle_frame(frame, %{status: :starting} = state),
    do: {:error, {:before_ready, elem(frame, 0)}, state}

  defp handle_frame(frame, state) when elem(frame, 0) in [:ready, :fatal],
    do: {:error, {:after_ready, elem(frame, 0)}, state}

  defp handle_frame({:reply, id, value}, state), do: answer(state, id, {:ok, value})

  defp handle_frame({:error, id, error}, state),
    do: answer(state, id, {:error, Symbiont.Python.Error.from_wire(error)})

  defp handle_frame({:call, _id, _m, _f, _args}, state) when map_size(state.tasks) >= @max_calls,
    do: {:error, {:too_many_calls, @max_calls}, state}

  defp handle_frame({:call, id, m, f, args}, state) do
    host = self()
    port = state.port

    {:ok, pid} =
      Task.Supervisor.start_child(Symbiont.TaskSupervisor, fn ->
        send(host, {:erlang_result, port, id, Symbiont.Host.Erlang.apply(m, f, args)})
      end)

    %{state | tasks: Map.put(state.tasks, id, pid)}
  end

  defp handle_frame({:msg, dest, value}, state) do
    case Symbiont.Host.Erlang.resolve_destination(dest) do
      {:ok, pid} ->
        send(pid, value)

      :error ->
        Logger.warning(
          "message from host #{inspect(state.name)} to unknown destination #{inspect(dest)} dropped",
          meta(state)
        )
    end

    state
  end

  defp handle_frame({:cancel, id}, state) do
    case Map.pop(state.tasks, id) do
      {nil, _} ->
        state

      {pid, tasks} ->
        Process.exit(pid, :kill)
        %{state | tasks: tasks}
    end
  end

  # agent_ready, agent_failed, ack, nack, publish, health: for the agent in that slot. One that
  # has just gone away leaves a few behind; they are dropped.
  defp handle_frame(frame, state) when elem(frame, 0) in @agent_frames do
    case Map.fetch(state.slots, elem(frame, 1)) do
      {:ok, {pid, _id, _ref}} -> send(pid, {:agent_frame, self(), frame})
      :error -> Logger.debug("host #{inspect(state.name)}: #{elem(frame, 0)} for a free slot")
    end

    state
  end

  # Its window goes with it (§8.2): publishes for it are dropped uncounted. Its share of
  # the host's time, if it took any, goes at once (a policy must not find it here after
  # it moved).
  defp stop_slot(state, slot, id) do
    if Usage.took?(state.usage, id), do: put_usage(state)

    case state.credit do
      %{} = credit -> stop_slot_frame(%{state | credit: Map.delete(credit, slot)}, slot)
      nil -> stop_slot_frame(state, slot)
    end
  end

  # The host's usage row (Symbiont.Host.Usage), for the agents it runs now.
  defp put_usage(state) do
    Usage.put(state.name, state.usage, agent_ids(state))
    state
  end

  defp stop_slot_frame(%{status: :ready} = state, slot),
    do: send_frame(state, ["agent_stop", slot])

  defp stop_slot_frame(state, _slot), do: state

  defp answer(state, id, result) do
    case Map.pop(state.pending, id) do
      {{from, timer, _sent}, pending} ->
        Process.cancel_timer(timer)
        GenServer.reply(from, result)
        %{state | pending: pending}

      {nil, _} ->
        Logger.debug("host #{inspect(state.name)}: late reply to call #{id} dropped", meta(state))
        state
    end
  end

  defp ready(state, info) do
    now = System.monotonic_time(:millisecond)
    usage = Usage.start(state.usage, System.monotonic_time(:microsecond))
    state = %{state | status: :ready, info: info, ready_at: now, heard_at: now, usage: usage}

    # A host that announces heartbeats in `ready` gets pinged (PROTOCOL.md §11).
    if info["heartbeat"] == true,
      do: Process.send_after(self(), {:heartbeat, state.port}, state.config.heartbeat_ms)

    state = %{state | peer_max_frame: info["max_frame"] || state.config.max_frame}
    state = %{state | box: Blackbox.open(state.box, info["blackbox"] == true)}
    # A process that keeps to the windows of §8.2 is held to them, and given credit.
    state = %{state | credit: if(info["credit"] == true, do: %{}), own: {0, 0}}

    # Flush what waited for the process: calls and casts in order.
    state =
      for {id, frame} <- :queue.to_list(state.waiting),
          id == nil or Map.has_key?(state.pending, id),
          reduce: state,
          do: (state -> emit(state, frame))

    pending = Map.new(state.pending, fn {id, {from, timer, _}} -> {id, {from, timer, true}} end)
    state = %{state | waiting: :queue.new(), pending: pending, out: Out.flush(state.out)}

    # The agents start in the new process, each from its last acked state.
    for {_slot, {pid, _id, _ref}} <- state.slots, do: send(pid, {:host_up, self(), state.port})

    Symbiont.Telemetry.execute(
      [:symbiont, :host, :start],
      %{startup_us: System.monotonic_time(:microsecond) - state.started_at},
      %{host: state.name, os_pid: state.os_pid, restarts: state.crashes, standby: state.standby}
    )

    state
  end

  # Every callback ends in Out.reply/1: frames for the port are written in batches.
  @impl true
  def handle_info(:timeout, state), do: {:noreply, %{state | out: Out.flush(state.out)}}
  def handle_info(msg, state), do: Out.reply(info(msg, state))

  @impl true
  def handle_cast(msg, state), do: Out.reply(cast_msg(msg, state))

  @impl true
  def handle_call(msg, from, state), do: Out.reply(call_msg(msg, from, state))

  defp emit(state, iodata), do: %{state | out: Out.emit(state.out, iodata)}

  # The last line of defence of the owner's memory (`:max_mailbox`): a port has no input
  # flow control, and frames that need no credit (pongs, late replies, acks of old seqs,
  # logs past the output limit) cost the owner more to decode than the process to write.
  # The length of the mailbox is cheap to read, at each port message; only when it is
  # over the bound are the port's own messages among it counted (a copy of the mailbox,
  # at most once every @recount_every port messages), so that a burst of calls from the
  # node's own processes is never taken for a flood.
  defp flooding(%{since_count: n} = state) when n < @recount_every,
    do: {:ok, %{state | since_count: n + 1}}

  defp flooding(%{config: %{max_mailbox: max}} = state) do
    case Process.info(self(), :message_queue_len) do
      {:message_queue_len, n} when n > max ->
        {:messages, messages} = Process.info(self(), :messages)
        port = state.port
        waiting = Enum.count(messages, &match?({^port, {:data, _}}, &1))

        if waiting > max,
          do: {:error, {:flooding, waiting, max}},
          else: {:ok, %{state | since_count: 0}}

      _ ->
        {:ok, state}
    end
  end

  ## Crashes and restarts

  defp protocol_error(state, reason) do
    Logger.error(
      "protocol error from host #{inspect(state.name)}#{agent_suffix(state)}: #{Protocol.format_error(reason)}",
      meta(state)
    )

    crashed(state, {:protocol_error, reason})
  end

  defp crashed(state, reason) do
    # Whose code was running, read before anything else can touch the process.
    slots = state.slots
    {verdict, moved, state} = blame(state, reason)
    close_port(state)

    uptime =
      if state.started_at,
        do: div(System.monotonic_time(:microsecond) - state.started_at, 1000),
        else: 0

    consecutive = if uptime >= @stable_ms, do: 1, else: state.consecutive + 1

    crash = %{
      reason: reason,
      status: exit_status(reason),
      os_pid: state.os_pid,
      logs: :queue.to_list(state.logs),
      uptime_ms: uptime,
      at: DateTime.utc_now(),
      suspect: suspect_id(verdict, slots)
    }

    # A restart on request (restart/2) is not a failure of the process: a warning, and
    # no backoff.
    requested? = match?({:restarted, _}, reason)

    Logger.log(
      if(requested?, do: :warning, else: :error),
      format_crash(%{state | slots: slots}, crash) <> format_blame(verdict, slots, reason),
      meta(state)
    )

    Symbiont.Telemetry.execute([:symbiont, :host, :crash], %{uptime_ms: uptime}, %{
      host: state.name,
      agents: for({_slot, {_pid, id, _ref}} <- slots, do: id),
      os_pid: state.os_pid,
      reason: reason,
      status: crash.status,
      suspect: crash.suspect
    })

    fail_pending(state, {:host_down, reason})
    # Its time is measured afresh in the new process.
    Usage.forget(state.name)
    # What its agents are told: a restart on request is no one's crash, a stalled handler
    # is its agent's (see charged?/2 in Symbiont.Agent.Server).
    down = %{message: format_crash_reason(reason), logs: crash.logs, requested: requested?}
    down = with {:stalled, id, _} <- reason, do: Map.put(down, :stalled, id), else: (_ -> down)

    # Each agent is told whether it is charged (Symbiont.Host.Blame), and the one moved to
    # a host of its own where it goes.
    for {slot, {pid, _id, _ref}} <- slots do
      notice = Blame.notice(verdict, slot)
      move_to = with {^slot, host} <- moved, do: host, else: (_ -> nil)
      send(pid, {:host_down, self(), down |> Map.merge(notice) |> Map.put(:move_to, move_to)})
    end

    delay = if requested?, do: 0, else: backoff(consecutive, state.config.backoff_max)

    crashes = state.crashes + 1
    # No timer for an immediate restart: a timer of 0 ms still waits for the timer wheel.
    if delay == 0,
      do: send(self(), {:restart, crashes}),
      else: Process.send_after(self(), {:restart, crashes}, delay)

    pending = Map.filter(state.pending, fn {_id, {_from, _timer, sent?}} -> not sent? end)

    advertise(state, nil)

    %{
      state
      | status: :backoff,
        port: nil,
        os_pid: nil,
        crashes: crashes,
        consecutive: consecutive,
        last_crash: crash,
        pending: pending,
        tasks: %{},
        box: Blackbox.close(state.box),
        credit: nil,
        own: {0, 0},
        # Frames not yet written were for the dead process.
        out: Out.to(state.out, nil)
    }
  end

  # Who is charged with the crash (Symbiont.Host.Blame): the verdict, and {slot, host}
  # when the agent in that slot was charged with crashing this shared host once too
  # often, and moved to a host of its own (its slot here is gone).
  defp blame(state, reason) do
    reading = Blackbox.read(state.box, state.os_pid)
    ready? = state.status == :ready
    verdict = Blame.verdict(reason, reading, Map.keys(state.slots), ready?)

    case verdict do
      {:charged, slot, _running} when map_size(state.slots) > 1 ->
        {_pid, id, _ref} = state.slots[slot]
        ids = agent_ids(state)
        now = System.monotonic_time(:millisecond)

        case Blame.strike(state.blame, id, now, ids) do
          {:stay, _n, blame} -> {verdict, nil, %{state | blame: blame}}
          {:isolate, n, blame} -> isolate(%{state | blame: blame}, verdict, slot, n)
        end

      _ ->
        {verdict, nil, state}
    end
  end

  # The suspect goes to a host of its own, started like this one and named after it (or,
  # when a host has that name, after it and a number): its slot here is freed, so that
  # the new process does not start it, and it attaches to its new host when it is told
  # (Symbiont.Agent.Server). Published as an `isolate` remediation by the supervisor.
  defp isolate(state, verdict, slot, n) do
    {_pid, id, ref} = state.slots[slot]
    window = state.config.isolate_window_ms

    case start_own(state.config.opts, id) do
      {:ok, name} ->
        Process.demonitor(ref, [:flush])

        reason =
          "crashed the host #{inspect(state.name)} it shared with #{map_size(state.slots) - 1} " <>
            "other agents #{n} times within #{window} ms: moved to a host of its own, #{inspect(name)}"

        Logger.warning("agent #{id} #{reason}", host: state.name, agent: id)

        Symbiont.Remediation.publish("isolate", id, reason,
          by: "supervisor",
          host: name,
          evidence: %{"crashes" => n, "window_ms" => window, "from" => state.name}
        )

        {verdict, {slot, name}, %{state | slots: Map.delete(state.slots, slot)}}

      {:error, error} ->
        Logger.error(
          "agent #{id} crashed the shared host #{inspect(state.name)} #{n} times, but no host of its own could be started: #{inspect(error)}",
          host: state.name,
          agent: id
        )

        {verdict, nil, state}
    end
  end

  defp suspect_id({:charged, slot, _running}, slots), do: elem(slots[slot], 1)
  defp suspect_id(_verdict, _slots), do: nil

  # For a host of several agents, who the crash is charged to.
  defp format_blame(:nobody, slots, {:restarted, _}) when map_size(slots) > 1,
    do: "\n  charged to no agent: a restart on request"

  defp format_blame(verdict, slots, _reason) when map_size(slots) > 1 do
    case verdict do
      {:charged, slot, seq} when is_integer(seq) ->
        "\n  charged to agent #{elem(slots[slot], 1)}: its delivery (seq #{seq}) was running; the other agents are restarted, not charged"

      {:charged, slot, _} ->
        "\n  charged to agent #{elem(slots[slot], 1)}: its code was running; the other agents are restarted, not charged"

      :nobody ->
        "\n  charged to no agent: none of their code was running"

      :unknown ->
        "\n  whose code was running is not known (the host keeps no flight recorder)"
    end
  end

  defp format_blame(_verdict, _slots, _reason), do: ""

  @doc false
  # Milliseconds before restart number `n` of a row (the first is immediate).
  @spec backoff(pos_integer, pos_integer) :: non_neg_integer
  def backoff(1, _max), do: 0
  def backoff(n, max), do: min(max, 10 * Integer.pow(2, min(n - 2, 20)))

  defp exit_status({:exit, status}), do: status
  defp exit_status(_), do: nil

  @doc false
  # What a crash reason (`{:host_down, reason}` of a failed call) means, in words.
  @spec format_crash_reason(term) :: String.t()
  def format_crash_reason(reason)

  def format_crash_reason({:exit, status}) when status > 128,
    do: "exited with status #{status} (signal #{status - 128})"

  def format_crash_reason({:exit, status}), do: "exited with status #{status}"

  def format_crash_reason({:protocol_error, r}),
    do: "was stopped after a protocol error: #{Protocol.format_error(r)}"

  def format_crash_reason({:spawn_failed, r}), do: "could not be started: #{inspect(r)}"
  def format_crash_reason({:restarted, why}), do: "was restarted on request: #{why}"

  def format_crash_reason({:unresponsive, ms}),
    do:
      "was restarted: it sent nothing for #{ms} ms (#{@missed_beats} heartbeats missed; frozen or stuck in native code)"

  def format_crash_reason({:stalled, agent, ms}),
    do:
      "was restarted: a handler of agent #{agent} did not stop after its handler_timeout of #{ms} ms"

  # A write to a host that has just died fails before its exit status arrives, and the
  # port then closes without one (erts sends no exit_status after epipe): how it died is
  # not known, only that it is gone.
  def format_crash_reason({:port_closed, :epipe}),
    do: "died (a write found its pipe closed, before its exit status could be read)"

  def format_crash_reason(other), do: "went down: #{inspect(other)}"

  defp format_crash(state, crash) do
    why = format_crash_reason(crash.reason)

    logs =
      case crash.logs do
        [] -> " (it printed nothing)"
        lines -> "; last output:\n" <> Enum.map_join(lines, "\n", &("    " <> &1))
      end

    "host #{inspect(state.name)}#{agent_suffix(state)} (os pid #{crash.os_pid || "-"}) #{why} after #{crash.uptime_ms} ms#{logs}"
  end

  defp fail_pending(state, reason) do
    for {_id, {from, timer, true}} <- state.pending do
      Process.cancel_timer(timer)
      GenServer.reply(from, {:error, reason})
    end

    :ok
  end

  # The process gets EOF, then SIGKILL after the grace period; then its process group (the
  # children it forked or spawned) is killed too. A process that exited by itself (its
  # port is closed already) leaves only its group to kill.
  defp close_port(%{port: port, os_pid: os_pid, config: config}),
    do: Symbiont.Host.Reaper.close(port, os_pid, config.grace)

  ## Logs

  # A line is logged within the output limit (Symbiont.Host.Output), and kept, cut to
  # its max_line, among the last lines of a crash report either way. A logging record's
  # fields (§7: checked by Symbiont.Host.Protocol) count in its bytes, and go in the
  # Logger metadata under the one key :python, as a map with fixed atom keys: the host's
  # names stay strings, never atoms (the atom table is not the host's to fill).
  defp log_line(state, level, message, fields \\ nil) do
    message = Output.cut(message, state.output)
    now = System.monotonic_time(:millisecond)
    size = byte_size(message) + if(fields, do: Protocol.fields_cost(fields), else: 0)

    output =
      case Output.take(state.output, size, now) do
        {:ok, output} ->
          Logger.log(level, message, python_meta(fields, meta(state)))
          output

        {:first_drop, output} ->
          Process.send_after(self(), :output_summary, output.limit.summary_ms)
          output

        {:drop, output} ->
          output
      end

    state = %{state | output: output}
    keep = state.config.log_lines
    logs = :queue.in(message, state.logs)

    if state.log_count >= keep,
      do: %{state | logs: :queue.drop(logs)},
      else: %{state | logs: logs, log_count: state.log_count + 1}
  end

  defp python_meta(nil, meta), do: meta

  defp python_meta(fields, meta) do
    python = %{
      logger: Map.get(fields, "logger"),
      level: Map.get(fields, "level"),
      extra: Map.get(fields, "extra", %{})
    }

    [{:python, python} | meta]
  end

  # A host that runs one agent logs with the agent's name too (PROTOCOL.md §7).
  defp meta(state) do
    case agent_ids(state) do
      [id] -> [host: state.name, agent: id]
      _ -> [host: state.name]
    end
  end

  defp agent_ids(state), do: for({_slot, {_pid, id, _ref}} <- state.slots, do: id)

  defp agent_suffix(state) do
    case agent_ids(state) do
      [] -> ""
      [id] -> " (agent #{id})"
      ids -> " (agents #{Enum.join(ids, ", ")})"
    end
  end

  defp format_remote_error(error) do
    "#{error["type"]}: #{error["message"]}"
  end

  ## Sending

  defp encode_frame(state, frame) do
    with {:ok, iodata} <- MsgPack.encode(frame) do
      size = IO.iodata_length(iodata)

      if size > state.peer_max_frame,
        do: {:error, {:frame_too_large, size, state.peer_max_frame}},
        else: {:ok, [<<size::32>> | iodata]}
    end
  end

  defp send_frame(%{port: port} = state, frame) when port != nil do
    case encode_frame(state, frame) do
      {:ok, iodata} ->
        emit(state, iodata)

      {:error, reason} ->
        Logger.error("cannot send #{hd(frame)} frame: #{inspect(reason)}", meta(state))
        state
    end
  end

  defp send_frame(state, _frame), do: state

  ## Introspection

  defp public_info(state) do
    %{
      name: state.name,
      pid: self(),
      status: state.status,
      os_pid: state.os_pid,
      runtime: state.info["runtime"],
      uptime_ms: state.ready_at && System.monotonic_time(:millisecond) - state.ready_at,
      crashes: state.crashes,
      last_crash: state.last_crash,
      pending_calls: map_size(state.pending),
      # Busy time over wall-clock time of its last heartbeats (Symbiont.Host.Usage), or nil.
      utilisation: Usage.summary(state.usage, agent_ids(state)).utilisation,
      recent_logs: :queue.to_list(state.logs),
      agents: state.slots |> Enum.sort() |> Enum.map(fn {_slot, {_pid, id, _ref}} -> id end)
    }
  end
end

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

  ## How it is built

  This module owns the public API and the GenServer: the port, the timers and the state
  of the host (one record, `Symbiont.Host.State`). Each part of the work is a module of
  its own that runs on that state, in the owner's process:

    * `Symbiont.Host.Options` - the options below, validated once at the edge.
    * `Symbiont.Host.Launch` - starting a process (warm or cold), `init` and `ready`.
    * `Symbiont.Host.Frames` - the frame layer: reading, dispatching and writing frames,
      flow control (PROTOCOL.md §8.2) and the mailbox bound.
    * `Symbiont.Host.Calls` - calls, casts and messages from the node to the process.
    * `Symbiont.Host.Callbacks` - calls, casts and messages from the process to the node.
    * `Symbiont.Host.Slots` - the agents the host runs, a slot each.
    * `Symbiont.Host.Logs` - the process's output in the node's log, and its last lines.
    * `Symbiont.Host.Crash` - what happens when the process goes down, and the restart.
    * `Symbiont.Host.RestartPolicy` - when to restart (backoff) and when a silent process
      is dead: pure functions.

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

  alias Symbiont.Host.{Blackbox, Callbacks, Calls, Crash, Frames, Launch, Logs}
  alias Symbiont.Host.{Options, Out, RestartPolicy, Slots, State, Usage}

  @typedoc "A host: its pid or the name it was started with."
  @type host :: pid | String.t()

  ## Public API (internal to Symbiont: users go through Symbiont.Python and Symbiont)

  @doc false
  @spec child_spec(keyword) :: Supervisor.child_spec()
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
  Validates host options once, at the edge (`Symbiont.Host.Options`).

      iex> {:error, %ArgumentError{message: msg}} = Symbiont.Host.validate_options(call_timeout: -1)
      iex> msg
      "expected :call_timeout to be a positive integer (milliseconds), got: -1"
  """
  @spec validate_options(keyword) :: {:ok, map} | {:error, Exception.t()}
  defdelegate validate_options(opts), to: Options, as: :validate

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

  @doc false
  @spec call(host, String.t(), String.t(), list, timeout | nil) :: {:ok, term} | {:error, term}
  def call(host, module, function, args, timeout) do
    # The arguments are encoded here, in the caller, not in the host's process: a call
    # of megabytes (the conductor's snapshot of 10,000 agents) would stop that process,
    # and every agent and caller it serves, for as long as it takes.
    with {:ok, pid} <- lookup(host),
         {:ok, args} <- Symbiont.MsgPack.encode(args, iodata: false) do
      args = %Symbiont.MsgPack.Raw{data: args}

      safe_call(pid, host, {:call, module, function, args, timeout}, timeout)
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
    with {:ok, pid} <- lookup(host), do: safe_call(pid, host, :info, 5_000)
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
         {:ok, opts} <- safe_call(pid, like, :options, 5_000),
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
  def attach(host, id, module \\ nil),
    do: safe_call(host, host, {:attach, self(), id, module}, 5_000)

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
    with {:ok, pid} <- lookup(host), do: safe_call(pid, host, {:restart, reason}, 5_000)
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
      with {:ok, %{agents: ids}} <- safe_call(pid, host, :info, 5_000) do
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

  # A call to `pid`, the owner of `host`. One gone before the call reached it is no
  # host, as a lookup a moment later would say (the registry drops a name a moment after
  # its process); one that went down during the call is a host down.
  defp safe_call(pid, host, request, timeout) do
    # The owner answers every call itself (its timers fire first); the margin only guards
    # against an owner that is gone or wedged.
    GenServer.call(pid, request, if(is_integer(timeout), do: timeout + 5_000, else: 60_000))
  catch
    :exit, {:noproc, _} -> {:error, {:no_host, host}}
    :exit, {reason, _} -> {:error, {:host_down, reason}}
  end

  defp via(name), do: {:via, Registry, {Symbiont.Host.Registry, name}}

  @doc false
  # The longest time in ms a caller may give (Symbiont.Host.Options.max_ms/0).
  @spec max_ms() :: pos_integer
  defdelegate max_ms(), to: Options

  @doc false
  # The error for a time option past max_ms/0 (Symbiont.Host.Options.too_long/2).
  @spec too_long(atom, integer) :: String.t()
  defdelegate too_long(key, ms), to: Options

  @doc false
  # Every line a host logs is logged from this module, whichever part of its work it
  # comes from (Symbiont.Host.Logs, Crash, Calls, ...), so that
  # `Logger.put_module_level(Symbiont.Host, level)` still sets the level of them all.
  # `message` may be a function, called only if the line is logged.
  @spec log(Logger.level(), String.t() | (() -> String.t()), keyword) :: :ok
  def log(level, message, metadata \\ []), do: Logger.log(level, message, metadata)

  @doc false
  # Milliseconds before restart number `n` of a row (Symbiont.Host.RestartPolicy).
  @spec backoff(pos_integer, pos_integer) :: non_neg_integer
  defdelegate backoff(n, max), to: RestartPolicy

  @doc false
  # What a crash reason (`{:host_down, reason}` of a failed call) means, in words
  # (Symbiont.Host.Crash.format_reason/1).
  @spec format_crash_reason(term) :: String.t()
  defdelegate format_crash_reason(reason), to: Crash, as: :format_reason

  ## GenServer: the process owns the port, its timers and its state; the modules named in
  ## the moduledoc of each part do the work, each on this state.

  @impl true
  def init(config) do
    Process.flag(:trap_exit, true)

    state = State.new(config)

    {:ok, state, {:continue, :open}}
  end

  @impl true
  def handle_continue(:open, state), do: Out.reply({:noreply, Launch.open(state)})

  # Every callback ends in Out.reply/1: frames for the port are written in batches.
  @impl true
  def handle_call(msg, from, state), do: Out.reply(call_msg(msg, from, state))

  @impl true
  def handle_cast(msg, state), do: Out.reply({:noreply, cast_msg(msg, state)})

  @impl true
  def handle_info(:timeout, state), do: {:noreply, %{state | out: Out.flush(state.out)}}
  def handle_info(msg, state), do: Out.reply({:noreply, info(msg, state)})

  defp call_msg({:call, _m, _f, _args, _timeout} = call, from, state),
    do: Calls.call(state, call, from)

  defp call_msg(:info, _from, state), do: {:reply, {:ok, public_info(state)}, state}
  defp call_msg(:options, _from, state), do: {:reply, {:ok, state.config.opts}, state}

  defp call_msg({:restart, _reason}, _from, %{os_pid: nil} = state),
    do: {:reply, {:error, :not_running}, state}

  defp call_msg({:restart, reason}, _from, state) do
    Symbiont.Host.Reaper.kill(state.os_pid)
    {:reply, :ok, %{state | restart_reason: reason}}
  end

  defp call_msg({:attach, pid, id, module}, _from, state) do
    {{slot, port, max_frame}, state} = Slots.attach(state, pid, id, module)
    {:reply, {:ok, slot, port, max_frame}, state}
  end

  defp cast_msg({:cast, m, f, args}, state), do: Calls.send_or_queue(state, ["cast", m, f, args])
  defp cast_msg({:send, dest, value}, state), do: Calls.send_or_queue(state, ["msg", dest, value])

  defp cast_msg({:restart_process, port, reason}, %{port: port} = state) when port != nil,
    do: Crash.crashed(state, reason)

  defp cast_msg({:restart_process, _old_port, _reason}, state), do: state
  defp cast_msg({:detach, slot}, state), do: Slots.detach(state, slot)

  # An agent server has handled publishes of its slot in this process (§8.2).
  defp cast_msg({:credit, port, slot, frames, bytes}, %{port: port, credit: %{} = c} = state)
       when is_map_key(c, slot),
       do: Frames.give_back(state, slot, frames, bytes)

  defp cast_msg({:credit, _port, _slot, _frames, _bytes}, state), do: state

  defp info({port, {:data, chunk}}, %{port: port} = state), do: Frames.data(state, chunk)

  defp info({port, {:exit_status, _}}, %{port: port, restart_reason: why} = state)
       when why != nil,
       do: Crash.crashed(%{state | restart_reason: nil}, {:restarted, why})

  defp info({port, {:exit_status, status}}, %{port: port} = state),
    do: Crash.crashed(state, {:exit, status})

  # Killed on request (restart/2): whichever news of its death comes first (a write that
  # found the pipe closed, often, before the exit status) is the restart, never a crash.
  defp info({:EXIT, port, reason}, %{port: port, restart_reason: why} = state)
       when reason != :normal and why != nil,
       do: Crash.crashed(%{state | restart_reason: nil}, {:restarted, why})

  defp info({:EXIT, port, reason}, %{port: port} = state) when reason != :normal,
    do: Crash.crashed(state, {:port_closed, reason})

  defp info({:EXIT, _port_or_task, _}, state), do: state
  defp info({:call_timeout, id}, state), do: Calls.timeout(state, id)

  defp info({:start_timeout, port}, %{port: port, status: :starting} = state),
    do: Crash.protocol_error(state, {:start_timeout, state.config.start_timeout})

  defp info({:start_timeout, _}, state), do: state

  defp info({:heartbeat, port}, %{port: port, status: :ready} = state) do
    every = state.config.heartbeat_ms
    silent = System.monotonic_time(:millisecond) - state.heard_at

    if RestartPolicy.unresponsive?(silent, every, state.unanswered) do
      # A frozen process would not read its EOF: no grace period.
      Symbiont.Host.Reaper.kill(state.os_pid)
      Crash.crashed(state, {:unresponsive, silent})
    else
      Process.send_after(self(), {:heartbeat, port}, every)
      beat = state.beat + 1
      Frames.send_frame(%{state | beat: beat, unanswered: state.unanswered + 1}, ["ping", beat])
    end
  end

  defp info({:heartbeat, _old_port}, state), do: state
  defp info({:restart, n}, %{crashes: n, status: :backoff} = state), do: Crash.restart(state, n)
  defp info({:restart, _}, state), do: state

  defp info({:erlang_result, port, id, result}, %{port: port} = state),
    do: Callbacks.result(state, id, result)

  defp info({:erlang_result, _old_port, _id, _result}, state), do: state

  # A cast of this process has run (§8.2).
  defp info({:cast_done, port, size}, %{port: port, credit: %{}} = state),
    do: Callbacks.cast_done(state, size)

  defp info({:cast_done, _old_port, _size}, state), do: state
  # An agent went away: its slot in the process is freed (never reused).
  defp info({:DOWN, _ref, :process, pid, _reason}, state), do: Slots.down(state, pid)
  defp info(:output_summary, state), do: Logs.summary(state)

  defp info(msg, state) do
    Logger.debug(
      "host #{inspect(state.name)} ignored #{inspect(msg, limit: 5)}",
      Logs.meta(state)
    )

    state
  end

  @impl true
  def terminate(reason, state) do
    Crash.close_port(state)
    Blackbox.close(state.box)
    Usage.forget(state.name)
    Calls.fail(state, {:host_down, :stopped})

    uptime =
      if state.status == :ready,
        do: System.monotonic_time(:millisecond) - state.ready_at,
        else: 0

    Symbiont.Telemetry.execute([:symbiont, :host, :stop], %{uptime_ms: uptime}, %{
      host: state.name,
      agents: Slots.ids(state),
      os_pid: state.os_pid,
      reason: reason
    })
  end

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
      utilisation: Usage.summary(state.usage, Slots.ids(state)).utilisation,
      recent_logs: Logs.recent(state),
      agents: Slots.sorted_ids(state)
    }
  end
end

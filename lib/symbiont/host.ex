defmodule Symbiont.Host do
  @moduledoc """
  The owner of one host OS process: a GenServer holding a Port to `python -m symbiont.host`.

  It speaks `docs/PROTOCOL.md` with the process and outlives it: when the process exits,
  crashes or breaks the protocol, the owner logs why (exit status and the last lines the
  process printed), fails the calls that were running, and starts a new process with
  backoff (the first restart is immediate, repeated crashes wait 10 ms, 20 ms, ... up to
  5 s). Calls, casts and agent deliveries that arrive while the process is (re)starting
  wait for it, so nothing accepted is lost across a restart.

  Most code uses it through `Symbiont.Python` (ErlPort-style calls) or the agents of the
  manifest; `start_link/1` is the child spec entry point under `Symbiont.Hosts`.

  ## Options

    * `:name` - a string (or atom) naming the host in logs and registering it, so that it
      can be addressed by name. Default: `"python-N"`.
    * `:python` - the Python executable. Default: see `Symbiont.Python`.
    * `:python_path` - directories prepended to the host's `sys.path`. Default: the
      `:python_path` application env.
    * `:cd` - the working directory of the process. Default: the current directory.
    * `:env` - extra environment variables, a list of `{name, value}` strings.
    * `:agent` - `nil` or an agent spec `%{name: .., module: .., class: .., config: %{}}`;
      see `Symbiont.Agent`.
    * `:call_timeout` - default timeout of calls, in ms. Default: 5000.
    * `:start_timeout` - how long the process may take to answer the handshake. Default: 10000.
    * `:max_frame` - the largest frame accepted from the process, in bytes. Default: 64 MiB.
    * `:backoff_max` - the longest wait between restarts, in ms. Default: 5000.
    * `:log_lines` - how many of the last output lines a crash report keeps. Default: 20.
    * `:grace` - how long a stopped process may take to exit after its input is closed,
      in ms, before it is killed. Default: 2000.
  """
  use GenServer, restart: :transient

  require Logger

  alias Symbiont.Host.{Framer, Protocol}
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
  @allowed_keys [:name, :python, :python_path, :cd, :env, :agent | Keyword.keys(@defaults)]
  # A process that stayed up this long before crashing restarts without delay.
  @stable_ms 5_000

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
  @spec validate_options(keyword) :: {:ok, map} | {:error, ArgumentError.t()}
  def validate_options(opts) when is_list(opts) do
    with :ok <- known_keys(opts),
         opts = Keyword.merge(@defaults, opts),
         {:ok, name} <- validate_name(Keyword.get(opts, :name)),
         :ok <- each_positive(opts, Keyword.keys(@defaults)),
         {:ok, python} <- validate_python(Keyword.get(opts, :python)),
         {:ok, cd} <- validate_cd(Keyword.get(opts, :cd, File.cwd!())),
         {:ok, paths} <- validate_paths(Keyword.get(opts, :python_path), cd),
         {:ok, env} <- validate_env(Keyword.get(opts, :env, [])),
         {:ok, agent} <- Symbiont.Agent.validate_spec(Keyword.get(opts, :agent)) do
      {:ok,
       opts
       |> Map.new()
       |> Map.merge(%{
         name: name,
         python: python,
         cd: cd,
         python_path: paths,
         env: env,
         agent: agent
       })}
    else
      {:error, message} when is_binary(message) -> {:error, ArgumentError.exception(message)}
    end
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
  @spec info(host) :: {:ok, map} | {:error, term}
  def info(host) do
    with {:ok, pid} <- lookup(host), do: safe_call(pid, :info, 5_000)
  end

  @doc false
  @spec stop(host) :: :ok | {:error, term}
  def stop(host) do
    with {:ok, pid} <- lookup(host) do
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

  defp each_positive(opts, keys) do
    Enum.reduce_while(keys, :ok, fn key, :ok ->
      case Keyword.fetch!(opts, key) do
        v when is_integer(v) and v > 0 ->
          {:cont, :ok}

        v ->
          {:halt,
           {:error,
            "expected #{inspect(key)} to be a positive integer#{unit(key)}, got: #{inspect(v)}"}}
      end
    end)
  end

  defp unit(key) when key in [:max_frame], do: " (bytes)"
  defp unit(key) when key in [:log_lines], do: ""
  defp unit(_), do: " (milliseconds)"

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
    if File.dir?(cd),
      do: {:ok, Path.expand(cd)},
      else: {:error, "expected :cd to be an existing directory, got: #{inspect(cd)}"}
  end

  defp validate_cd(cd), do: {:error, "expected :cd to be a directory path, got: #{inspect(cd)}"}

  defp validate_paths(nil, cd),
    do: validate_paths(Application.get_env(:symbiont, :python_path, []), cd)

  defp validate_paths(paths, cd) when is_list(paths) do
    if Enum.all?(paths, &is_binary/1),
      do: {:ok, Enum.map(paths, &Path.expand(&1, cd))},
      else: {:error, "expected :python_path to be a list of strings, got: #{inspect(paths)}"}
  end

  defp validate_paths(paths, _),
    do: {:error, "expected :python_path to be a list of strings, got: #{inspect(paths)}"}

  defp validate_env(env) when is_list(env) do
    if Enum.all?(env, &match?({k, v} when is_binary(k) and is_binary(v), &1)),
      do: {:ok, env},
      else: {:error, "expected :env to be a list of {name, value} strings, got: #{inspect(env)}"}
  end

  defp validate_env(env),
    do: {:error, "expected :env to be a list of {name, value} strings, got: #{inspect(env)}"}

  ## GenServer

  @impl true
  def init(config) do
    Process.flag(:trap_exit, true)

    state = %{
      config: config,
      name: config.name,
      agent_name: config.agent && config.agent.name,
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
      out: [],
      out_bytes: 0,
      out_age: 0,
      logs: :queue.new(),
      log_count: 0,
      crashes: 0,
      consecutive: 0,
      last_crash: nil,
      agent: init_agent(config.agent)
    }

    {:ok, state, {:continue, :open}}
  end

  defp init_agent(nil), do: nil

  defp init_agent(spec) do
    %{
      spec: spec,
      topics: [],
      timers: [],
      subscribed: false,
      seq: 0,
      inflight: :queue.new(),
      in_flight: 0,
      queue: :queue.new(),
      queued: 0,
      # Read by checked publishes on this node: 1, the queue length; 2, room reserved by
      # publishers for events still on their way (Symbiont.Mesh.publish/3).
      load: :atomics.new(2, signed: true),
      overloaded: false,
      # Deliveries still to be sent one at a time after a crash (see charge_crash/2).
      probation: 0,
      dropped: 0,
      state_bin: nil,
      handled: 0,
      failed: 0,
      published: 0
    }
  end

  @impl true
  def handle_continue(:open, state), do: batched({:noreply, open(state)})

  defp open(%{config: c} = state) do
    env =
      [
        {"PYTHONPATH", Enum.join([Symbiont.Config.python_src() | c.python_path], ":")},
        {"PYTHONUNBUFFERED", "1"},
        {"PYTHONDONTWRITEBYTECODE", "1"} | c.env
      ]
      |> Enum.map(fn {k, v} -> {String.to_charlist(k), String.to_charlist(v)} end)

    port_opts = [
      :binary,
      :stream,
      :nouse_stdio,
      :exit_status,
      args: ["-m", "symbiont.host"],
      env: env,
      cd: c.cd
    ]

    try do
      Port.open({:spawn_executable, c.python}, port_opts)
    rescue
      e in ErlangError -> crashed(state, {:spawn_failed, e.original})
    else
      port ->
        os_pid = port |> Port.info(:os_pid) |> elem(1)
        Process.send_after(self(), {:start_timeout, port}, c.start_timeout)

        state = %{
          state
          | port: port,
            os_pid: os_pid,
            status: :starting,
            framer: Framer.new(c.max_frame),
            started_at: System.monotonic_time(:microsecond)
        }

        send_frame(state, ["init", Protocol.version(), init_options(state)])
    end
  end

  defp init_options(%{config: c, agent: agent}) do
    %{
      "name" => c.name,
      "node" => Atom.to_string(node()),
      "max_frame" => c.max_frame,
      "python_path" => c.python_path,
      "agent" => agent && agent_init(agent)
    }
  end

  # The checkpoint goes back exactly as the host sent it (spliced, never re-encoded).
  defp agent_init(%{spec: spec, state_bin: bin}) do
    state = if bin, do: %MsgPack.Raw{data: bin}, else: nil

    %{
      "name" => spec.name,
      "module" => spec.module,
      "class" => spec.class,
      "config" => spec.config,
      "state" => state
    }
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

  defp cast_msg({:cast, m, f, args}, state),
    do: {:noreply, send_or_queue(state, ["cast", m, f, args])}

  defp cast_msg({:send, dest, value}, state),
    do: {:noreply, send_or_queue(state, ["msg", dest, value])}

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

  defp info({port, {:data, chunk}}, %{port: port} = state) do
    case Framer.feed(state.framer, chunk) do
      {:ok, payloads, framer} -> {:noreply, handle_payloads(payloads, %{state | framer: framer})}
      {:error, reason} -> {:noreply, protocol_error(state, reason)}
    end
  end

  defp info({port, {:exit_status, status}}, %{port: port} = state) do
    {:noreply, crashed(state, {:exit, status})}
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

  defp info({:restart, n}, %{crashes: n, status: :backoff} = state),
    do: {:noreply, open(state)}

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

  defp info(%Symbiont.Event{} = event, %{agent: agent} = state) when agent != nil do
    Symbiont.Mesh.count_received(Symbiont.Mesh, state.agent_name, event.topic)
    # A checked publish reserved room here (slot 2 of the load); it has arrived.
    if event.reserved != [] and self() in event.reserved, do: :atomics.sub(agent.load, 2, 1)
    {:noreply, accept(state, event)}
  end

  defp info({:tick, name}, %{agent: agent} = state) when agent != nil do
    # Ticks coalesce: while the agent is behind (events waiting) or the same tick is still
    # in flight, another one would only pile up.
    busy? =
      agent.queued > 0 or
        Enum.any?(:queue.to_list(agent.inflight), &match?({_, {:tick, ^name}, _, _}, &1))

    if busy?, do: {:noreply, state}, else: {:noreply, accept(state, {:tick, name})}
  end

  defp info(msg, state) do
    Logger.debug("host #{inspect(state.name)} ignored #{inspect(msg, limit: 5)}", meta(state))
    {:noreply, state}
  end

  @impl true
  def terminate(_reason, state) do
    close_port(state)
    fail_pending(state, {:host_down, :stopped})
    :ok
  end

  ## Frames from the host

  defp handle_payloads([], state), do: state

  defp handle_payloads([payload | rest], state) do
    case Protocol.decode(payload) do
      {:ok, frame} ->
        case handle_frame(frame, state) do
          {:error, reason, state} -> protocol_error(state, reason)
          state -> handle_payloads(rest, state)
        end

      {:error, reason} ->
        protocol_error(state, reason)
    end
  end

  defp handle_frame({:log, level, message}, state), do: log_line(state, level, message)

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

  defp handle_frame({:reply, id, value}, state), do: answer(state, id, {:ok, value})

  defp handle_frame({:error, id, error}, state),
    do: answer(state, id, {:error, Symbiont.Python.Error.from_wire(error)})

  defp handle_frame({:call, id, m, f, args}, state) do
    host = self()
    port = state.port

    {:ok, pid} =
      Task.Supervisor.start_child(Symbiont.TaskSupervisor, fn ->
        send(host, {:erlang_result, port, id, Symbiont.Host.Erlang.apply(m, f, args)})
      end)

    %{state | tasks: Map.put(state.tasks, id, pid)}
  end

  defp handle_frame({:cast, m, f, args}, state) do
    name = state.name

    Task.Supervisor.start_child(Symbiont.TaskSupervisor, fn ->
      with {:error, error} <- Symbiont.Host.Erlang.apply(m, f, args) do
        Logger.warning("cast from host #{inspect(name)} to #{m}.#{f} failed: #{error["message"]}")
      end
    end)

    state
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

  defp handle_frame({kind, _, _}, %{agent: nil} = state) when kind in [:ack, :nack, :publish],
    do: {:error, {:bad_frame, Atom.to_string(kind), "this host runs no agent"}, state}

  defp handle_frame({:ack, seq, state_bin}, state), do: ack(state, seq, state_bin)

  defp handle_frame({:nack, seq, error}, state) do
    {acked, state} = take_inflight(ack(state, seq - 1, state.agent.state_bin), seq)

    state =
      Enum.reduce(acked, state, fn {^seq, what, _frame, attempts}, state ->
        Logger.error(
          "agent #{state.agent_name} failed on #{describe(what)}: #{format_remote_error(error)}",
          meta(state)
        )

        retry_or_give_up(state, what, attempts + 1, "handler_failed", error)
      end)

    drain(state)
  end

  defp handle_frame({:publish, topic, payload}, state) do
    Symbiont.Mesh.publish(Symbiont.Mesh, %Symbiont.Event{
      topic: topic,
      payload: payload,
      from: state.agent_name
    })

    update_in(state.agent.published, &(&1 + 1))
  end

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
    state = %{state | status: :ready, info: info, ready_at: now}
    state = %{state | peer_max_frame: info["max_frame"] || state.config.max_frame}
    state = agent_ready(state, info["agent"])

    # Flush what waited for the process: calls and casts, then agent deliveries in order.
    state =
      for {id, frame} <- :queue.to_list(state.waiting),
          id == nil or Map.has_key?(state.pending, id),
          reduce: state,
          do: (state -> emit(state, frame))

    pending = Map.new(state.pending, fn {id, {from, timer, _}} -> {id, {from, timer, true}} end)

    # Deliveries in flight go again, in order; then what waits in the queue (after a crash
    # with several in flight, they are all there: see charge_crash/2).
    state =
      if state.agent do
        state =
          for {_seq, _what, frame, _attempts} <- :queue.to_list(state.agent.inflight),
              reduce: state,
              do: (state -> emit(state, frame))

        drain(state)
      else
        state
      end

    # Last, so that whoever waits for this event finds the agent subscribed and serving.
    Symbiont.Telemetry.execute(
      [:symbiont, :host, :start],
      %{startup_us: System.monotonic_time(:microsecond) - state.started_at},
      %{host: state.name, agent: state.agent_name, os_pid: state.os_pid, restarts: state.crashes}
    )

    %{state | waiting: :queue.new(), pending: pending}
  end

  defp agent_ready(%{agent: nil} = state, _), do: state

  defp agent_ready(%{agent: %{subscribed: true}} = state, _), do: state

  defp agent_ready(%{agent: agent} = state, info) do
    topics = List.wrap(info && info["topics"])
    timers = List.wrap(info && info["timers"])
    # Replicas of an agent form a queue group named after it: one of them gets each event.
    for topic <- topics do
      :ok =
        Symbiont.Mesh.subscribe(Symbiont.Mesh, topic,
          group: state.agent_name,
          metadata: %{
            agent: state.agent_name,
            load: {agent.load, agent.spec.max_queue, agent.spec.overflow}
          }
        )
    end

    for %{"name" => name, "every_ms" => ms} <- timers, is_integer(ms) and ms > 0 do
      :timer.send_interval(ms, {:tick, name})
    end

    %{state | agent: %{agent | topics: topics, timers: timers, subscribed: true}}
  end

  # Every callback goes through `batched/1`: frames for the port are collected in the
  # state and written with one Port.command when the mailbox is empty (a GenServer
  # timeout of 0 fires only then), or once 64 KiB or 64 messages have gone by. A lone
  # call is written at once; a burst of casts or events costs one write, not one each.
  @impl true
  def handle_info(:timeout, state), do: {:noreply, flush(state)}
  def handle_info(msg, state), do: batched(info(msg, state))

  @impl true
  def handle_cast(msg, state), do: batched(cast_msg(msg, state))

  @impl true
  def handle_call(msg, from, state), do: batched(call_msg(msg, from, state))

  @out_max_bytes 65_536
  @out_max_age 64

  defp batched({:noreply, state}) do
    {state, timeout} = out_timeout(state)
    {:noreply, state, timeout}
  end

  defp batched({:reply, reply, state}) do
    {state, timeout} = out_timeout(state)
    {:reply, reply, state, timeout}
  end

  # 0 (flush once the mailbox is empty) while frames wait, :infinity otherwise.
  defp out_timeout(%{out: []} = state), do: {state, :infinity}

  defp out_timeout(state) do
    state = %{state | out_age: state.out_age + 1}
    if state.out_age >= @out_max_age, do: {flush(state), :infinity}, else: {state, 0}
  end

  # Queues a frame for the port (see batched/1).
  defp emit(%{port: nil} = state, _iodata), do: state

  defp emit(state, iodata) do
    state = %{
      state
      | out: [iodata | state.out],
        out_bytes: state.out_bytes + IO.iodata_length(iodata)
    }

    if state.out_bytes >= @out_max_bytes, do: flush(state), else: state
  end

  defp flush(%{out: []} = state), do: state

  defp flush(%{port: nil} = state), do: %{state | out: [], out_bytes: 0, out_age: 0}

  defp flush(state) do
    Port.command(state.port, :lists.reverse(state.out))
    %{state | out: [], out_bytes: 0, out_age: 0}
  end

  ## Agent deliveries (PROTOCOL.md §8)

  # An event or tick for the agent: sent at once while the credit window has room and
  # nothing waits before it, queued otherwise; a full queue applies the overflow policy.
  defp accept(%{agent: agent} = state, what) do
    %{max_queue: max, overflow: overflow} = agent.spec

    cond do
      agent.queued == 0 and agent.in_flight < window(agent) ->
        send_delivery(state, what, 0)

      agent.queued < max ->
        state |> enqueue({what, 0}) |> check_load()

      overflow == :drop_oldest ->
        {{:value, {oldest, _attempts}}, queue} = :queue.out(agent.queue)
        state |> put_queue(queue, agent.queued - 1) |> overflowed(oldest) |> enqueue({what, 0})

      true ->
        overflowed(state, what)
    end
  end

  # Queue items are {event_or_tick, failed_attempts_so_far}.
  # The credit window: one delivery at a time while on probation (see charge_crash/2).
  defp window(%{probation: 0} = agent), do: agent.spec.max_in_flight
  defp window(_agent), do: 1

  defp enqueue(%{agent: agent} = state, item),
    do: put_queue(state, :queue.in(item, agent.queue), agent.queued + 1)

  # The queue, its length and the load slot publishers read (slot 1) change together.
  defp put_queue(%{agent: agent} = state, queue, queued) do
    :atomics.put(agent.load, 1, queued)
    %{state | agent: %{agent | queue: queue, queued: queued}}
  end

  # After a failed attempt (a nack, or the host dying while on it): again, first in line,
  # until max_attempts; then the dead letters, with the attempts and the last error.
  defp retry_or_give_up(%{agent: agent} = state, what, attempts, reason, error) do
    if attempts < agent.spec.max_attempts do
      put_queue(state, :queue.in_r({what, attempts}, agent.queue), agent.queued + 1)
    else
      dead_letter(state, what, reason, attempts, error)
      update_in(state.agent.failed, &(&1 + 1))
    end
  end

  defp overflowed(state, what) do
    dead_letter(state, what, "overloaded", 0, nil)
    update_in(state.agent.dropped, &(&1 + 1))
  end

  defp send_delivery(%{agent: agent} = state, what, attempts) do
    seq = agent.seq + 1

    fields =
      case what do
        %Symbiont.Event{topic: topic, payload: payload} ->
          ["event", seq, topic, %MsgPack.Bin{data: payload}]

        {:tick, name} ->
          ["tick", seq, name]
      end

    frame = fields |> Protocol.encode() |> Framer.frame()
    state = if state.status == :ready, do: emit(state, frame), else: state

    agent = %{
      agent
      | seq: seq,
        inflight: :queue.in({seq, what, frame, attempts}, agent.inflight),
        in_flight: agent.in_flight + 1
    }

    %{state | agent: agent}
  end

  # Sends what waits while the credit window has room.
  defp drain(%{agent: %{queued: 0}} = state), do: check_load(state)

  defp drain(%{agent: agent} = state) do
    if agent.in_flight < window(agent) do
      {{:value, {what, attempts}}, queue} = :queue.out(agent.queue)
      state |> put_queue(queue, agent.queued - 1) |> send_delivery(what, attempts) |> drain()
    else
      check_load(state)
    end
  end

  # Health with hysteresis: `overloaded` at the high-water mark, `healthy` again below half.
  defp check_load(%{agent: %{overloaded: false, queued: n, spec: %{high_water: hw}}} = state)
       when n >= hw do
    publish_load(state, "overloaded", "queue at #{n} of #{state.agent.spec.max_queue}")
    put_in(state.agent.overloaded, true)
  end

  defp check_load(%{agent: %{overloaded: true, queued: n, spec: %{high_water: hw}}} = state)
       when n < div(hw, 2) do
    publish_load(state, "healthy", "queue back at #{n} (high water #{hw})")
    put_in(state.agent.overloaded, false)
  end

  defp check_load(state), do: state

  defp publish_load(%{agent: agent} = state, kind, reason) do
    metrics = %{
      "queue" => agent.queued,
      "in_flight" => agent.in_flight,
      "max_queue" => agent.spec.max_queue,
      "dropped" => agent.dropped
    }

    level = if kind == "healthy", do: :info, else: :warning
    Logger.log(level, "agent #{state.agent_name} is #{kind}: #{reason}", meta(state))
    Symbiont.Health.publish(kind, state.agent_name, reason, metrics)
  end

  defp ack(state, seq, state_bin) do
    {acked, state} = take_inflight(state, seq)
    state = update_in(state.agent.probation, &max(0, &1 - length(acked)))

    state = %{
      state
      | agent: %{state.agent | state_bin: state_bin, handled: state.agent.handled + length(acked)}
    }

    drain(state)
  end

  # Removes the deliveries up to and including `seq` from the in-flight queue.
  defp take_inflight(%{agent: agent} = state, seq) do
    {taken, rest} = take_upto(agent.inflight, seq, [])
    agent = %{agent | inflight: rest, in_flight: agent.in_flight - length(taken)}
    {taken, %{state | agent: agent}}
  end

  defp take_upto(queue, seq, acc) do
    case :queue.peek(queue) do
      {:value, {s, _, _, _} = item} when s <= seq ->
        take_upto(:queue.drop(queue), seq, [item | acc])

      _ ->
        {:lists.reverse(acc), queue}
    end
  end

  defp dead_letter(state, what, reason, attempts, error) do
    {topic, payload} =
      case what do
        %Symbiont.Event{topic: t, payload: p} -> {t, %MsgPack.Bin{data: p}}
        {:tick, name} -> {"$tick", name}
      end

    letter = %{
      "agent" => state.agent_name,
      "topic" => topic,
      "payload" => payload,
      "reason" => reason,
      "attempts" => attempts,
      "error" => error
    }

    with {:ok, event} <- Symbiont.Event.new("symbiont.dead_letter", letter, state.agent_name),
         do: Symbiont.Mesh.broadcast(Symbiont.Mesh, event.topic, event)
  end

  defp describe(%Symbiont.Event{topic: t}), do: "an event on #{inspect(t)}"
  defp describe({:tick, name}), do: "timer #{inspect(name)}"

  ## Crashes and restarts

  defp protocol_error(state, reason) do
    Logger.error(
      "protocol error from host #{inspect(state.name)}#{agent_suffix(state)}: #{Protocol.format_error(reason)}",
      meta(state)
    )

    close_port(state)
    crashed(%{state | port: nil}, {:protocol_error, reason})
  end

  defp crashed(state, reason) do
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
      at: DateTime.utc_now()
    }

    Logger.error(format_crash(state, crash), meta(state))

    Symbiont.Telemetry.execute([:symbiont, :host, :crash], %{uptime_ms: uptime}, %{
      host: state.name,
      agent: state.agent_name,
      os_pid: state.os_pid,
      reason: reason,
      status: crash.status
    })

    fail_pending(state, {:host_down, reason})
    state = charge_crash(state, crash)
    delay = backoff(consecutive, state.config.backoff_max)
    crashes = state.crashes + 1
    Process.send_after(self(), {:restart, crashes}, delay)

    pending = Map.filter(state.pending, fn {_id, {_from, _timer, sent?}} -> not sent? end)

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
        # Frames not yet written were for the dead process; deliveries are resent anyway.
        out: [],
        out_bytes: 0,
        out_age: 0
    }
  end

  # Which delivery killed the host? Acks are batched, so with several in flight the oldest
  # unacked one may well have been handled already. So: with one delivery in flight, it is
  # the culprit and is charged an attempt (after max_attempts, the dead letters: a poison
  # message does not crash-loop its agent). With several, they all go back to the front of
  # the queue uncharged, and the agent is on probation: they go one at a time until each
  # has been acked, so that a crash meanwhile has exactly one suspect.
  defp charge_crash(%{agent: nil} = state, _crash), do: state
  defp charge_crash(%{agent: %{in_flight: 0}} = state, _crash), do: state

  defp charge_crash(%{agent: %{in_flight: 1} = agent} = state, crash) do
    {{:value, {_seq, what, _frame, attempts}}, rest} = :queue.out(agent.inflight)
    # Requeued or given up, the rest of the suspects still go one at a time.
    probation = max(agent.probation, 1)
    state = %{state | agent: %{agent | inflight: rest, in_flight: 0, probation: probation}}

    error = %{
      "type" => "crash",
      "message" => "the host #{format_crash_reason(crash.reason)} while handling it",
      "traceback" => Enum.join(crash.logs, "\n")
    }

    retry_or_give_up(state, what, attempts + 1, "crashed", error)
  end

  defp charge_crash(%{agent: agent} = state, _crash) do
    queue =
      agent.inflight
      |> :queue.to_list()
      |> List.foldr(agent.queue, fn {_seq, what, _frame, attempts}, q ->
        :queue.in_r({what, attempts}, q)
      end)

    queued = agent.queued + agent.in_flight

    agent = %{
      agent
      | inflight: :queue.new(),
        in_flight: 0,
        probation: max(agent.probation, agent.in_flight)
    }

    put_queue(%{state | agent: agent}, queue, queued)
  end

  defp backoff(1, _max), do: 0
  defp backoff(n, max), do: min(max, 10 * Integer.pow(2, min(n - 2, 20)))

  defp exit_status({:exit, status}), do: status
  defp exit_status(_), do: nil

  defp format_crash_reason({:exit, status}) when status > 128,
    do: "exited with status #{status} (signal #{status - 128})"

  defp format_crash_reason({:exit, status}), do: "exited with status #{status}"

  defp format_crash_reason({:protocol_error, r}),
    do: "was stopped after a protocol error: #{Protocol.format_error(r)}"

  defp format_crash_reason({:spawn_failed, r}), do: "could not be started: #{inspect(r)}"
  defp format_crash_reason(other), do: "went down: #{inspect(other)}"

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

  defp close_port(%{port: nil}), do: :ok

  defp close_port(%{port: port, os_pid: os_pid, config: config}) do
    try do
      Port.close(port)
    rescue
      ArgumentError -> :ok
    end

    if os_pid, do: Symbiont.Host.Reaper.reap(os_pid, config.grace)
    :ok
  end

  ## Logs

  defp log_line(state, level, message) do
    Logger.log(level, message, meta(state))
    keep = state.config.log_lines
    logs = :queue.in(message, state.logs)

    if state.log_count >= keep,
      do: %{state | logs: :queue.drop(logs)},
      else: %{state | logs: logs, log_count: state.log_count + 1}
  end

  defp meta(state), do: [host: state.name, agent: state.agent_name]

  defp agent_suffix(%{agent_name: nil}), do: ""
  defp agent_suffix(%{agent_name: name}), do: " (agent #{name})"

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
      recent_logs: :queue.to_list(state.logs),
      agent: state.agent && agent_info(state.agent)
    }
  end

  defp agent_info(agent) do
    %{
      name: agent.spec.name,
      python:
        if(agent.spec[:wasm],
          do: "wasm:" <> Path.relative_to_cwd(agent.spec.wasm),
          else: "#{agent.spec.module}:#{agent.spec.class}"
        ),
      topics: agent.topics,
      timers: Enum.map(agent.timers, & &1["name"]),
      in_flight: agent.in_flight,
      queue: agent.queued,
      max_queue: agent.spec.max_queue,
      overloaded: agent.overloaded,
      dropped: agent.dropped,
      handled: agent.handled,
      failed: agent.failed,
      published: agent.published,
      state:
        case agent.state_bin && MsgPack.decode(agent.state_bin) do
          {:ok, value} -> value
          _ -> nil
        end
    }
  end
end

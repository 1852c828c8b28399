defmodule Symbiont.Agent.Server do
  @moduledoc """
  One agent on the BEAM: its name, subscriptions, queue, credit window, retries, state
  checkpoint, timers and health. Its logic runs in a host (`Symbiont.Host`), which may
  run many agents (PROTOCOL.md §8: each has a slot in the host process).

  The server outlives its host's process. It writes its deliveries straight to the
  host's port (batched, see `Symbiont.Host.Out`); the host's owner hands it the frames
  of its slot (`agent_ready`, `ack`, `nack`, `publish`, `health`) and tells it when the process
  goes down (the delivery that was running is charged when the crash is charged to this
  agent, the others requeued, see `host_down/2`; it may be moved to a host of its own) and
  when a new one is ready (the agent starts again from its last acked state and gets the
  un-acked deliveries again, in order). While no process serves it, events wait in its
  queue: nothing accepted is lost. Each event or tick it accepts gets a seq that it keeps
  when it is delivered again, so that what its handler publishes again has the same ids
  (`t:Symbiont.Event.id/0`); with `dedupe: true` it drops an event whose id it has
  accepted (see "Duplicates" in `Symbiont.Agent`).

  A durable agent (spec `durable: true`) also journals its queue and its checkpoint to
  disk (`Symbiont.Journal`): each event as it accepts it, each ack with the new state.
  It commits the journal (one fsync) once its mailbox is empty, after 64 records, and
  before any batch of frames goes to its host, so an event is on disk before the host
  sees it; when it starts, it resumes from the journal. A journal the disk refuses (or
  that cannot be opened) makes it refuse events, report `failing` and try again, without
  crashing (see "Durable agents" in `Symbiont.Agent`, and `docs/DURABILITY.md` §6). An agent placed with `:nodes`
  registers with `:global` before anything else and does not start (`:ignore`) when
  another copy runs anywhere in the cluster.

  ## Options

    * `:id` - the name it is registered under (`Symbiont.Agent.whereis/1`); replicas of
      one agent share the agent's name but have ids of their own. Default: the name.
    * `:host` - the name of the host that runs it (required).
    * `:state_bin` - the checkpoint to start from (the msgpack bytes of an agent's
      state, as `info/1` of another replica has it). Default: none.
    * `:fallback` - a pid that gets, as a new event, each event this agent fails on
      instead of trying it again here (a canary hands its failures to the stable
      version; see `Symbiont.Deploy`). Default: none.
    * `:role` - `:stable` or `:canary` (see `Symbiont.Observation`), registered with its
      id. Default: `:stable`.
    * `:quarantined` - a reason: the agent starts quarantined (see `quarantine/2`), not
      attached to its host until `release/1` (the manifest starts so an agent that its
      check at node start found unable to start). Default: none.
    * everything else is the agent spec (see `Symbiont.Agent`), or `:spec` with one
      already validated.
  """
  use GenServer, restart: :transient

  require Logger

  alias Symbiont.Agent.{Dedupe, Delivery, StartFailures}
  alias Symbiont.Health.Window
  alias Symbiont.Host.{Credit, Framer, Out, Output, Protocol}
  alias Symbiont.Journal
  alias Symbiont.MsgPack
  alias Symbiont.Observation
  alias Symbiont.Signals

  @health_topic Symbiont.Health.topic()

  @registry Symbiont.Agent.Registry
  @samples 1000
  @linger_ms 100
  # How often to look for a host that is not (yet, or again) registered.
  @attach_retry_ms 20
  # How long past its handler_timeout an agent waits for its host to cancel a handler
  # (the host acks at least every 200 ms while it works through a batch).
  @stall_grace_ms 1_000
  # A durable agent commits its journal at least every this many records.
  @journal_batch 64
  # A journal the disk refused is tried again after 1 s, then 2 s, 4 s, and every 5 s.
  @journal_retry_ms 1_000
  @journal_retry_max_ms 5_000
  # Publishes are given back to the host (PROTOCOL.md §8.2) only while no agent on this
  # node that subscribes to their topics has more than this many messages waiting; else
  # again after @backlog_retry_ms.
  @backlog 4096
  @backlog_retry_ms 2
  # The p99 of its row (Symbiont.Observation) is written again at most this often.
  @observe_ms 1_000
  # How far into its queue a suspect is looked for (a delivery that failed goes back to
  # the front).
  @suspect_scan 100
  # Health kinds, the worst first (Symbiont.Observation.worst/1).
  @health_rank %{"failing" => 0, "overloaded" => 1, "degraded" => 2, "healthy" => 3}

  @doc false
  def child_spec(opts) do
    id = Keyword.get(opts, :id) || opts |> Keyword.get(:spec, opts) |> spec_name()
    %{id: {__MODULE__, id}, start: {__MODULE__, :start_link, [opts]}, restart: :transient}
  end

  defp spec_name(%{name: name}), do: name
  defp spec_name(opts), do: to_string(Keyword.get(opts, :name))

  @doc """
  Starts an agent server linked to the caller. Raises `ArgumentError` for an invalid
  spec or a missing `:host`.
  """
  @spec start_link(keyword) :: GenServer.on_start()
  def start_link(opts) when is_list(opts) do
    {host, opts} = Keyword.pop(opts, :host)
    {id, opts} = Keyword.pop(opts, :id)
    {spec, opts} = Keyword.pop(opts, :spec)
    {state_bin, opts} = Keyword.pop(opts, :state_bin)
    {fallback, opts} = Keyword.pop(opts, :fallback)
    {role, opts} = Keyword.pop(opts, :role, :stable)
    {quarantined, opts} = Keyword.pop(opts, :quarantined)

    spec =
      case Symbiont.Agent.validate_spec(spec || opts) do
        {:ok, spec} -> spec
        {:error, message} -> raise ArgumentError, message
      end

    unless is_binary(host) and host != "",
      do: raise(ArgumentError, "expected :host to be the name of a host, got: #{inspect(host)}")

    unless role in Observation.roles(),
      do:
        raise(
          ArgumentError,
          "expected :role to be one of #{inspect(Observation.roles())}, got: #{inspect(role)}"
        )

    id = to_string(id || spec.name)
    extra = %{state_bin: state_bin, fallback: fallback, role: role, quarantined: quarantined}
    # Registered with its name and role (the registry of roles, Symbiont.Observation) and
    # the name of its host, which the manifest reads (hosts/0).
    GenServer.start_link(__MODULE__, {id, host, spec, extra},
      name: via(id, {spec.name, role, host})
    )
  end

  @doc "The pid of the agent registered as `id`, or `nil`."
  @spec whereis(String.t() | pid) :: pid | nil
  def whereis(pid) when is_pid(pid), do: pid

  def whereis(id) when is_binary(id) do
    case Registry.lookup(@registry, id) do
      [{pid, _}] -> pid
      [] -> nil
    end
  end

  @doc """
  Where a replica placed with `:nodes` runs in the cluster: its pid, or `nil` when it runs
  nowhere (see "Placement" in `Symbiont.Agent`).
  """
  @spec locate(String.t()) :: pid | nil
  def locate(id) when is_binary(id) do
    case :global.whereis_name(global_name(id)) do
      :undefined -> nil
      pid -> pid
    end
  end

  defp global_name(id), do: {Symbiont.Agent, id}

  defp placed_here?(id, spec) do
    if Map.get(spec, :nodes),
      do: :global.register_name(global_name(id), self()) == :yes,
      else: true
  end

  @doc "Ids of the agents running on this node, sorted."
  @spec ids() :: [String.t()]
  def ids, do: @registry |> Registry.select([{{:"$1", :_, :_}, [], [:"$1"]}]) |> Enum.sort()

  @doc """
  The name of the host each agent running on this node is in, by id: where it was
  started, or the host of its own it was moved to (see "Blame" in `Symbiont.Manifest`).
  """
  @spec hosts() :: %{String.t() => String.t()}
  def hosts,
    do:
      @registry
      |> Registry.select([{{:"$1", :_, {:_, :_, :"$2"}}, [], [{{:"$1", :"$2"}}]}])
      |> Map.new()

  @doc """
  What the agent is doing: its queue (`:queue` events of `:queue_bytes` payload bytes, of
  at most `:max_queue` and `:max_queue_bytes`), in-flight deliveries (`:in_flight`, and
  their payload bytes, `:in_flight_bytes`), counters and decoded state (a Wasm agent's
  too: the value its module's `symbiont_state` wrote);
  `:journal` is a durable agent's `Symbiont.Journal.info/1` (committed first, so what it
  counts as accepted is on disk) plus `:held` (events whose journal record a failed
  commit did not write, waiting in memory for the journal to work again) and `:refused`
  (events dead-lettered meanwhile), `nil` for one that is not durable. Among the counters:
  `:duplicates`, the events a `dedupe: true` agent dropped as copies, and
  `:redelivered`, the deliveries it took back to send again (after a crash, a nack or a
  quarantine), `:refused_publishes`, its publishes dropped for its `:max_topics` or
  for a topic of the BEAM's (`Symbiont.ControlPlane`), and `:start_failures`, its failed
  starts in a row (0 once it starts; see "Agents that cannot start" in
  `Symbiont.Agent`). `:health` and `:health_reason`, `:crashes` (the deaths of its host
  charged to it, see "Blame" in `Symbiont.Manifest`), `:restarts`, `:role` and `:window`
  (its failure window) are those of `Symbiont.Observation` (see "How it is doing"
  there): this call is for one agent on request; what reads every agent reads the
  observation instead.
  """
  @spec info(String.t() | pid) :: {:ok, map} | {:error, {:no_agent, term}}
  def info(agent) do
    case whereis(agent) do
      nil -> {:error, {:no_agent, agent}}
      pid -> GenServer.call(pid, :info)
    end
  catch
    :exit, _ -> {:error, {:no_agent, agent}}
  end

  @doc """
  Counters, recent handling latencies and the checkpoint: `%{handled, failed, samples,
  state_bin}`, `samples` the
  last #{1000} `{acked_at_ms, latency_us, handling_us}` (monotonic ms; send to ack; what
  the handler took, see `Symbiont.Signals`) since it last started on purpose, newest
  first.
  """
  @spec metrics(String.t() | pid) :: {:ok, map} | {:error, {:no_agent, term}}
  def metrics(agent), do: safe_call(agent, :metrics, 5_000)

  @doc """
  Runs `spec` (a validated spec, see `Symbiont.Agent.with_wasm/2`) from now on, keeping
  the agent's name, queue and state: sending pauses, the deliveries in flight finish,
  the old version leaves its slot and the new one starts in a new slot of the same host
  from the last acked state (a Wasm module gets it in `symbiont_migrate`). Topics and
  timers stay those of the first version. Returns the spec it replaced.
  """
  @spec upgrade(String.t() | pid, map, timeout) :: {:ok, map} | {:error, term}
  def upgrade(agent, spec, timeout \\ 30_000), do: safe_call(agent, {:upgrade, spec}, timeout)

  @doc """
  Moves the agent to host `host` (a host that runs, by name), keeping its name, queue and
  state: sending pauses, the deliveries in flight finish where they are, the agent leaves
  its slot and starts in a new slot of `host` from its last acked state (a Wasm module gets
  it in `symbiont_migrate`), and the events that waited go there. Its registry entry and
  its row in `Symbiont.Observation` say where it runs from then on (the manifest keeps it
  there: see "Placement" in `Symbiont.Manifest`). Nothing is charged and its failure
  window goes on: a move is not a restart of its code. `Symbiont.Placement.reroute/2`
  moves a Wasm replica to a host of its own this way. `{:error, message}` for a
  quarantined agent, or one upgrading, moving or retiring.
  """
  @spec move(String.t() | pid, String.t(), timeout) :: :ok | {:error, term}
  def move(agent, host, timeout \\ 30_000) when is_binary(host),
    do: safe_call(agent, {:move, host}, timeout)

  @doc """
  Stops the agent without losing anything: it unsubscribes, hands every event still
  waiting (and each that arrives meanwhile) to `heir` as a new event, lets the deliveries
  in flight finish, then exits. Returns `:ok` once it is gone. With `heir` `nil` (the
  last replica of an agent retired for good) those events go to the dead letters with
  the reason `"retired"`.
  """
  @spec retire(String.t() | pid, pid | nil, timeout) :: :ok | {:error, term}
  def retire(agent, heir, timeout \\ 30_000) when is_pid(heir) or is_nil(heir),
    do: safe_call(agent, {:retire, heir}, timeout)

  @doc """
  Quarantines the agent: it leaves its host's slot (its process no longer runs it, so a
  crash loop stops), the deliveries in flight go back to the front of its queue
  uncharged, and events keep arriving and waiting in its bounded queue (the overflow
  policy applies). Publishes a `quarantined` health event. `release/1` ends it.
  """
  @spec quarantine(String.t() | pid, String.t()) :: :ok | {:error, term}
  def quarantine(agent, reason) when is_binary(reason),
    do: safe_call(agent, {:quarantine, reason}, 5_000)

  @doc """
  Ends a quarantine: the agent starts again in its host, from its last acked state, and
  a health event says what it is now: `healthy` ("released from quarantine"), unless a
  signal the release does not answer holds (a journal the disk refuses, its queue). A
  release is a restart on purpose: its failure window starts over. One quarantined for
  failed starts gets `:max_start_failures` tries afresh (see "Agents that cannot start"
  in `Symbiont.Agent`).
  """
  @spec release(String.t() | pid) :: :ok | {:error, term}
  def release(agent), do: safe_call(agent, :release, 5_000)

  @doc """
  Takes the suspect out of the queue: the first waiting event that has already failed
  (a handler error, or its host died while on it) goes to the dead letters with the
  reason `"poison"` and `why` as the error. `{:error, :no_suspect}` when none waits
  (it may be in flight: try again later).
  """
  @spec drop_suspect(String.t() | pid, String.t()) :: {:ok, map} | {:error, term}
  def drop_suspect(agent, why) when is_binary(why),
    do: safe_call(agent, {:drop_suspect, why}, 5_000)

  @doc """
  Starts the agent again in a new slot of its host, from its last acked state, keeping
  its queue (an upgrade to the same spec, see `upgrade/3`).
  """
  @spec restart(String.t() | pid, timeout) :: :ok | {:error, term}
  def restart(agent, timeout \\ 30_000) do
    with {:ok, info} <- info(agent),
         {:ok, _} <- upgrade(agent, info.spec, timeout),
         do: :ok
  end

  defp safe_call(agent, request, timeout) do
    case whereis(agent) do
      nil -> {:error, {:no_agent, agent}}
      pid -> GenServer.call(pid, request, timeout)
    end
  catch
    :exit, reason -> {:error, {:no_agent, agent, reason}}
  end

  # Registered with {name, role, host}: the registry of roles (Symbiont.Observation), and
  # the name of its host, which the manifest reads (hosts/0).
  defp via(id, value), do: {:via, Registry, {@registry, id, value}}

  ## GenServer

  @impl true
  def init({id, host, spec, extra}) do
    # Two maps: the fields the server reads and writes on every event, ack or delivery at
    # the top, and those that change seldom in `rare`. A map of more than 32 keys is a
    # hash trie, and each update of one costs several times that of a flat map (a third
    # of the server's time per event went to that; bench/RESULTS.md, "Profiling").
    # Keep the top level at 32 keys or fewer (a test checks).
    state = %{
      id: id,
      name: spec.name,
      spec: spec,
      host: host,
      host_pid: nil,
      slot: nil,
      # :detached (no process to run in), :starting (agent_start sent), :ready
      status: :detached,
      out: Out.new(),
      # Its queue, deliveries in flight, seqs and probation (Symbiont.Agent.Delivery).
      # The seq an event or tick gets stays with it when it is delivered again (after a
      # crash, a nack, a quarantine, or a restart from the journal). It is the seq of the
      # ids of what its handler publishes (PROTOCOL.md §8.1), and a durable agent's number
      # for the event in its journal.
      delivery: Delivery.new(),
      # The seq of the last ack (the delivery the checkpoint matches).
      acked_seq: 0,
      # A `dedupe: true` agent's memory of the event ids it has accepted (Dedupe), or nil.
      dedupe: if(Map.get(spec, :dedupe), do: Dedupe.new()),
      overloaded: false,
      state_bin: extra.state_bin,
      # A durable agent's Symbiont.Journal (spec :durable), or nil.
      journal: nil,
      # The reason, while quarantined (quarantine/2).
      quarantined: Map.get(extra, :quarantined),
      # When the last event arrived or was handled (monotonic ms): idleness.
      active_at: System.monotonic_time(:millisecond),
      # {acked_at_ms, latency_us, handling_us}, newest first, at most @samples (see
      # Symbiont.Signals), since its last start on purpose.
      samples: [],
      # {length of samples, when the last ack or nack came (monotonic µs, nil before
      # any: monotonic time may be negative), how long its handler has worked in all
      # (µs)}: see work/3.
      sampling: {0, nil, 0},
      handled: 0,
      failed: 0,
      # Monotonic ms of the last sign of progress from the host while deliveries are in
      # flight (a delivery sent to an idle agent, an ack, a nack), and whether a
      # :stall_check is on its way (see the handler_timeout in Symbiont.Agent).
      progress_at: 0,
      stall_check: false,
      # Publishes of its slot handled and not yet given back to the host (PROTOCOL.md
      # §8.2): {port, slot, frames, bytes, topics (at most 8) where they went, retry},
      # retry true while a :give_back is on its way (a subscriber was backlogged).
      credit: {nil, nil, 0, 0, [], false},
      # The outcomes of its last deliveries (Symbiont.Health.Window): its failure rate.
      window: Window.new(),
      rare: %{
        # Its counters in Symbiont.Observation (written after every message: reply/1),
        # nil until its row is open.
        obs: nil,
        host_ref: nil,
        # The largest frame the host's process accepts.
        max_frame: nil,
        topics: [],
        timers: [],
        subscribed: false,
        starts: 0,
        failures: 0,
        # Tells this server's seqs from those of an earlier one with the same id (a
        # durable agent keeps its incarnation in its journal, with its seqs).
        incarnation: System.os_time(:microsecond),
        # Read by checked publishes on this node (Symbiont.Mesh.publish/3). Slot 1: the
        # queue length plus the room publishers reserved for events still on their way,
        # in one counter, so that a publisher reads it whole (two counters read one after
        # the other could miss an event moving from one to the other, and overfill the
        # queue). Slot 3: the same for payload bytes (the queue's plus those reserved).
        # Slot 2: 1 while a durable agent's journal cannot be written (it refuses
        # events), 0 otherwise. See reserve/2 in Symbiont.Mesh for why this is exact.
        load: :atomics.new(3, signed: true),
        dropped: 0,
        # Deliveries taken back to be sent again (after a crash, a nack, a quarantine).
        redelivered: 0,
        # Deaths of its host charged to it (host_down/2: Symbiont.Host.Blame, else
        # charged?/2). A host that died while another agent's code ran, or restarted on
        # purpose, restarts it without a crash.
        crashes: 0,
        fallback: extra.fallback,
        # Its health (Symbiont.Observation): the worst of its signals, each
        # {kind, reason, metrics} by source (see set_signal/5), or "quarantined" while it
        # is; the reason; when it last changed (system ms).
        signals: %{},
        health: "healthy",
        health_reason: nil,
        health_at: System.system_time(:millisecond),
        # Its role (:stable, :canary).
        role: Map.get(extra, :role, :stable),
        # When its row was last written (monotonic ms), and whether a :window_check is on
        # its way (the failures of its window expire).
        observed_at: 0,
        window_check: false,
        # {from, spec} while waiting for the deliveries in flight to finish (upgrade/3).
        upgrading: nil,
        # {from, host} while waiting for the deliveries in flight to finish (move/3).
        moving: nil,
        # {from, heir} while retiring (retire/3).
        retiring: nil,
        # Its signals for the analytics (Symbiont.Signals), a map of their own (this one
        # has more than 32 keys already): the version it ran before (whose baseline a
        # new version is compared with), {handled, failed} when its version started,
        # its last crashes ([{at_ms, uptime_ms, seq}], newest first), since when its
        # process serves it (monotonic and system ms, or nil), when it last learnt a
        # baseline and worked out its evidence (monotonic ms), and that evidence.
        analytics: %{
          prev_version: nil,
          version_base: {0, 0},
          crash_log: [],
          up_at: nil,
          up_since: nil,
          # nil: never (monotonic time may be negative).
          learned_at: nil,
          evidence_at: nil,
          evidence: {nil, nil}
        },
        lingering: false,
        published: 0,
        # The topics the agent published on since its process started, each a copy of
        # its own (topic => the same binary; see own_topic/2), and its publishes refused
        # for :max_topics (whether that was told since the start, and how many in all).
        pub_topics: %{},
        topics_told: false,
        # Whether a publish on a topic of the BEAM's was logged since the start.
        reserved_told: false,
        refused_publishes: 0,
        last_error: nil,
        # While a durable agent's journal cannot be written: the events it had taken
        # whose journal record did not reach the disk, {event, attempts} in the order
        # accepted. They wait here, never sent to the host, until the journal is written
        # again (see journal_failed/2).
        held: [],
        # Events refused because the journal could not be written.
        refused: 0,
        # The number of the journal retry that is due (a :journal_retry timer).
        journal_retry: 0
      }
    }

    # A placed agent (spec :nodes) runs once in the cluster: :global refuses a second
    # copy before it touches its journal (see Symbiont.Manifest, "Placement").
    # A journal that cannot be opened keeps it from attaching (it has no state to start
    # from) but not from running: it says why, and tries again (see retry_journal/1).
    if placed_here?(id, spec) do
      state = rare(state, obs: Observation.open(id, observable(state)))

      case open_journal(state) do
        {:ok, state} -> {:ok, state, {:continue, :attach}}
        {:error, reason, state} -> {:ok, journal_failed(state, reason), {:continue, :attach}}
      end
    else
      :ignore
    end
  end

  @impl true
  def handle_continue(:attach, %{quarantined: nil} = state), do: reply({:noreply, attach(state)})

  # Started quarantined (the manifest's check at node start): its health says so.
  def handle_continue(:attach, state), do: reply({:noreply, refresh_health(state)})

  @impl true
  # Every callback ends in reply/1 (the journal, then Out.reply/1): one that did not would
  # cancel the timeout that flushes the frames still waiting, and they would wait for the
  # next message.
  # The journal is committed first, so that what info says was accepted is on disk.
  def handle_call(:info, _from, state) do
    state = commit(state)
    reply({:reply, {:ok, public_info(state)}, state})
  end

  def handle_call(:metrics, _from, state) do
    metrics = %{
      handled: state.handled,
      failed: state.failed,
      duplicates: Dedupe.dropped(state.dedupe),
      samples: state.samples,
      state_bin: state.state_bin
    }

    {:reply, {:ok, metrics}, state}
  end

  def handle_call({:upgrade, spec}, from, state) do
    case Symbiont.Agent.validate_spec(spec) do
      {:ok, spec} -> reply({:noreply, settle(rare(state, upgrading: {from, spec}))})
      {:error, message} -> reply({:reply, {:error, message}, state})
    end
  end

  def handle_call({:move, host}, _from, %{host: host} = state), do: reply({:reply, :ok, state})

  def handle_call({:move, host}, from, state) do
    busy =
      Enum.find_value(
        [
          quarantined: state.quarantined,
          upgrading: state.rare.upgrading,
          moving: state.rare.moving,
          retiring: state.rare.retiring
        ],
        fn {what, v} -> v != nil and what end
      )

    if busy,
      do: reply({:reply, {:error, "agent #{state.id} is #{busy}: it cannot move now"}, state}),
      else: reply({:noreply, settle(rare(state, moving: {from, host}))})
  end

  def handle_call({:quarantine, _reason}, _from, %{quarantined: q} = state) when q != nil,
    do: reply({:reply, :ok, state})

  def handle_call({:quarantine, reason}, _from, state) do
    Logger.warning("agent #{state.id} quarantined: #{reason}", meta(state))
    reply({:reply, :ok, quarantine_now(state, reason)})
  end

  def handle_call(:release, _from, %{quarantined: nil} = state),
    do: reply({:reply, :ok, state})

  def handle_call(:release, _from, state) do
    Logger.info("agent #{state.id} released from quarantine", meta(state))
    # Its health was `quarantined` until now: a health event says what it is now. A
    # release is a restart on purpose: what failed before it is not held against it, and
    # its starts are counted afresh (see "Agents that cannot start" in Symbiont.Agent).
    why = "released from quarantine"

    state =
      %{fresh_start(state, why) | quarantined: nil}
      |> rare(failures: 0)
      |> set_signal(:start, nil, why)
      |> refresh_health(why)

    state = if state.host_pid, do: reattach(state), else: attach(state)

    reply({:reply, :ok, state})
  end

  def handle_call({:drop_suspect, why}, _from, state) do
    case Delivery.take_suspect(state.delivery) do
      :error ->
        reply({:reply, {:error, :no_suspect}, state})

      {:ok, {what, attempts}, delivery} ->
        dead_letter(state, what, "poison", attempts, %{"message" => why})
        state = put_delivery(state, delivery)
        state = state |> journal_done([what]) |> commit()
        topic = with %Symbiont.Event{topic: t} <- what, do: t, else: (_ -> nil)
        reply = {:ok, %{topic: topic, attempts: attempts}}
        reply({:reply, reply, observe(%{state | failed: state.failed + 1})})
    end
  end

  def handle_call({:retire, heir}, from, state) do
    for topic <- state.rare.topics, do: Symbiont.Mesh.unsubscribe(Symbiont.Mesh, topic)
    reply_noreply_or_stop(settle(rare(state, retiring: {from, heir})))
  end

  @impl true
  def handle_info(:timeout, state) do
    state = commit(state)
    {:noreply, %{state | out: Out.flush(state.out)}}
  end

  def handle_info(msg, state) do
    case info(msg, state) do
      {:stop, state} -> reply_noreply_or_stop({:stop, state})
      state -> reply_noreply_or_stop(settle(state))
    end
  end

  defp reply_noreply_or_stop({:stop, state}) do
    state = commit(state)
    Out.flush(state.out)
    count(state)
    {:stop, :normal, state}
  end

  defp reply_noreply_or_stop(state), do: reply({:noreply, state})

  @impl true
  def terminate(_reason, state) do
    if state.journal, do: state |> commit() |> Map.fetch!(:journal) |> Journal.close()
    Out.flush(state.out)
    Observation.close(state.id, state.name, state.rare.role)
    :ok
  end

  defp info(%Symbiont.Event{} = event, state) do
    Symbiont.Mesh.count_received(Symbiont.Mesh, state.name, event.topic)
    # Admitted by a checked publish on this node, which reserved room here (in the load).
    admitted? = event.reserved != [] and self() in event.reserved

    # Its reservation becomes its place in the queue (accept/3), or goes back as soon as
    # it is known not to be queued (release/3): see reserve/2 in Symbiont.Mesh.
    cond do
      journal_up?(state) ->
        take(state, event, admitted?, &accept(&1, &2, admitted?))

      admitted? and Journal.opened?(state.journal) ->
        take(state, event, admitted?, &(&1 |> release(true, &2) |> hold(&2)))

      true ->
        state |> release(admitted?, event) |> refuse(event)
    end
  end

  defp info({:agent_frame, host, frame}, %{host_pid: host} = state), do: frame(frame, state)

  # A quarantined agent left its slot; the host may not have heard it before it restarted.
  defp info({:host_up, _host, _port}, %{quarantined: q} = state) when q != nil, do: state

  defp info({:host_up, host, port}, %{host_pid: host} = state), do: start_on(state, port)

  defp info({:host_down, host, crash}, %{host_pid: host} = state), do: host_down(state, crash)

  defp info({:DOWN, ref, :process, _, reason}, %{rare: %{host_ref: ref}} = state) do
    crash = %{message: "owner went down (#{inspect(reason)})", logs: [], owner: true}
    state = host_down(rare(%{state | host_pid: nil, slot: nil}, host_ref: nil), crash)
    Process.send_after(self(), :attach, @attach_retry_ms)
    state
  end

  defp info(:attach, %{host_pid: nil, quarantined: nil} = state), do: attach(state)

  defp info(:retired, %{rare: %{retiring: {from, _heir}}} = state) do
    # Its events all went to its heir or the dead letters: the journal has nothing left.
    # One it could not open is kept, for whoever looks into it.
    case state.journal do
      nil ->
        :ok

      journal ->
        if Journal.opened?(journal), do: Journal.delete(journal), else: Journal.close(journal)
    end

    state = %{state | journal: nil}
    GenServer.reply(from, :ok)
    {:stop, state}
  end

  defp info({:retry_start, port, n}, %{out: %{port: port}, rare: %{failures: n}} = state),
    do: start_on(state, port)

  defp info(:stall_check, state), do: stall_check(%{state | stall_check: false})

  defp info(:window_check, state) do
    state = rare(state, window_check: false)
    window = Window.expire(state.window, now_ms())
    why = if window == state.window, do: nil, else: "its failures are over a minute old"
    rate_signal(%{state | window: window}, why)
  end

  defp info({:journal_retry, n}, %{rare: %{journal_retry: n}} = state), do: retry_journal(state)

  defp info(:give_back, %{credit: {port, slot, frames, bytes, topics, true}} = state),
    do: give_back(%{state | credit: {port, slot, frames, bytes, topics, false}}, :checked)

  defp info(:give_back, state), do: state

  defp info({:tick, name}, state) do
    # Ticks coalesce: while the agent is behind (events waiting) or the same tick is still
    # in flight, another one would only pile up.
    if Delivery.tick_busy?(state.delivery, name) do
      state
    else
      {tick, state} = number(state, {:tick, name})
      accept(state, tick)
    end
  end

  defp info(msg, state) do
    Logger.debug("agent #{state.id} ignored #{inspect(msg, limit: 5)}", meta(state))
    state
  end

  ## The host

  # A durable agent whose journal could not be opened has no state to start from yet.
  defp attach(%{journal: %Journal{opened: false}} = state), do: state

  defp attach(state) do
    case Symbiont.Host.whereis(state.host) do
      nil ->
        Process.send_after(self(), :attach, @attach_retry_ms)
        state

      pid ->
        case Symbiont.Host.attach(pid, state.id, state.spec.module) do
          {:ok, slot, port, max_frame} ->
            ref = Process.monitor(pid)

            state =
              rare(%{state | host_pid: pid, slot: slot}, host_ref: ref, max_frame: max_frame)

            if port, do: start_on(state, port), else: state

          {:error, _} ->
            Process.send_after(self(), :attach, @attach_retry_ms)
            state
        end
    end
  end

  # A new slot in the same host (after an upgrade or a quarantine), started at once when
  # the host's process is up.
  defp reattach(state) do
    case Symbiont.Host.attach(state.host_pid, state.id, state.spec.module) do
      {:ok, slot, port, _max_frame} when port != nil -> start_on(%{state | slot: slot}, port)
      {:ok, slot, nil, _max_frame} -> %{state | slot: slot}
      _ -> state
    end
  end

  # A host process is ready: start the agent in it, from the last acked state. Not while
  # it has no slot there: quarantined, its host may still tell it of a new process (the
  # host_up sent before it took the agent's leave), and an agent_start without a slot is
  # a protocol error that would kill that process and its co-tenants.
  defp start_on(%{slot: nil} = state, _port), do: state

  defp start_on(state, port) do
    out = Out.to(state.out, port)

    state =
      rare(%{state | out: out, status: :starting},
        pub_topics: %{},
        topics_told: false,
        reserved_told: false
      )

    # What the agent said itself, and its publishes refused, were the process before's.
    state =
      state
      |> set_signal(:reported, nil, "started again")
      |> set_signal(:topics, nil, "started again")
      |> observe()

    emit(state, framed(["agent_start", state.slot, agent_start(state)]))
  end

  # The checkpoint goes back exactly as the host sent it (spliced, never re-encoded), with
  # the seq it matches (the ids of what the agent publishes outside a handler, §8.1).
  defp agent_start(%{spec: spec, state_bin: bin} = state) do
    %{
      "name" => spec.name,
      "module" => spec.module,
      "class" => spec.class,
      "config" => spec.config,
      "state" => if(bin, do: %MsgPack.Raw{data: bin}, else: nil),
      "seq" => state.acked_seq,
      "handler_timeout_ms" => with(:infinity <- handler_timeout(spec), do: nil),
      "max_topics" => Symbiont.Agent.max_topics(spec),
      "window" => Credit.window()
    }
  end

  # Its host's process went down: the one place that decides whether that is this agent's
  # crash (charged?/2: one crash more, and the delivery that was running charged an
  # attempt, see charge_crash/3) or only a restart (spare_crash/2: its deliveries go
  # again uncharged). With `move_to`, the agent goes on in that host, one of its own (see
  # "Blame" in Symbiont.Manifest).
  #
  # A Python agent's host process that dies, charged to it, while the agent starts (its
  # import exits, or crashes the interpreter) is a failed start of it, not a crash
  # (Symbiont.Agent.StartFailures); a Wasm agent shares its host with others, and the
  # crash is not charged to its start.
  defp host_down(state, crash) do
    charged? = charged?(state, crash)

    state =
      cond do
        charged? and state.status == :starting and state.spec.wasm == nil ->
          state
          |> requeue_inflight()
          |> detached()
          |> start_failed(StartFailures.host_down(crash), :host)

        charged? ->
          # A failure in its window when a delivery of its was running (or, with no
          # flight recorder, was in flight): not for its start or stop.
          handling? = state.delivery.in_flight > 0 and Map.get(crash, :running) != :none
          state = rare(state, crashes: state.rare.crashes + 1)
          state = analytics(state, crash_log: crash_log(state, crash))
          state = charge_crash(state, crash, Map.get(crash, :running))
          detached(if handling?, do: window_failed(state), else: state)

        true ->
          state |> spare_crash(crash) |> detached()
      end

    state |> move_to(Map.get(crash, :move_to)) |> observe()
  end

  defp detached(state),
    do:
      analytics(%{state | status: :detached, out: Out.to(state.out, nil)},
        up_at: nil,
        up_since: nil
      )

  # Its crashes, the newest first (at most 10), each with how long its process had served
  # it and the seq of the delivery that was running (nil: none known), for its crash
  # signal (Symbiont.Signals.crashes/5).
  defp crash_log(state, crash) do
    %{up_at: up_at, crash_log: log} = state.rare.analytics
    uptime = if up_at, do: now_ms() - up_at, else: 0

    running =
      case Map.get(crash, :running) do
        seq when is_integer(seq) -> seq
        _ -> Delivery.only_in_flight(state.delivery)
      end

    entry = {System.system_time(:millisecond), uptime, running}
    Enum.take([entry | log], 10)
  end

  # Whether a host's death is this agent's crash. Its owner says when it knows
  # (`suspect`, from the host's flight recorder: Symbiont.Host.Blame; a restart on
  # request is no one's). When it does not (`suspect` nil: no recorder, several agents),
  # it is the crash of the agents it ran, but: a restart on request (by hand, the
  # conductor: `requested`) is no one's crash, nor is an owner that went down (`owner`);
  # a host restarted because a handler did not stop (`stalled`, its agent's id) is the
  # crash of that agent only.
  defp charged?(state, crash) do
    case Map.get(crash, :suspect) do
      suspect when is_boolean(suspect) ->
        suspect

      nil ->
        cond do
          Map.get(crash, :requested, false) -> false
          Map.get(crash, :owner, false) -> false
          Map.get(crash, :stalled) != nil -> crash.stalled == state.id
          true -> true
        end
    end
  end

  # Its host's process went down, and that is not this agent's crash (charged?/2): it is
  # only restarted. Its deliveries in flight go back to the front of its queue uncharged;
  # a restart on request (by hand, by the conductor) starts its failure window over.
  defp spare_crash(state, crash) do
    state = requeue_inflight(state)

    if Map.get(crash, :requested, false),
      do: fresh_start(state, "restarted on request"),
      else: state
  end

  # Moved to a host of its own (Symbiont.Host.Blame, or move/3): its registry value and its
  # row say where it runs now.
  defp move_to(state, nil), do: state

  defp move_to(state, host) do
    if state.rare.host_ref, do: Process.demonitor(state.rare.host_ref, [:flush])

    {_new, _old} =
      Registry.update_value(@registry, state.id, fn {name, role, _host} -> {name, role, host} end)

    attach(rare(%{state | host: host, host_pid: nil, slot: nil}, host_ref: nil))
  end

  # A failed start (Symbiont.Agent.StartFailures): its :start signal says `failing` (a
  # health event the first time, with the count of failures; the retries that fail too
  # are no news), and it tries again after a backoff (or when its host's process is back:
  # `:host`), the first error of a row (or a new one) logged; after the spec's
  # :max_start_failures in a row, a quarantine, logged once with the traceback.
  defp start_failed(state, error, retry) do
    failures = state.rare.failures + 1
    max = Symbiont.Agent.max_start_failures(state.spec)
    next = StartFailures.next(failures, max, state.rare.last_error, error)
    signal = {"failing", "could not start: #{error["message"]}", %{"failures" => failures}}

    state =
      rare(%{state | status: :detached}, failures: failures, last_error: error)
      |> set_signal(:start, signal)
      |> observe()

    case next do
      :quarantine ->
        reason = StartFailures.reason(failures, error)

        Logger.error(
          "agent #{state.id} quarantined: #{reason} (host #{inspect(state.host)}, " <>
            "#{describe_logic(state.spec)}); no more tries until " <>
            "Symbiont.Agent.Server.release(#{inspect(state.id)})" <>
            StartFailures.traceback(error),
          meta(state)
        )

        quarantine_now(state, reason)

      {:retry, delay, tell?} ->
        again = if retry == :host, do: "when its host is back", else: "in #{delay} ms"

        if tell?,
          do:
            Logger.error(
              "agent #{state.id} could not start in host #{inspect(state.host)}: " <>
                "#{StartFailures.describe(error)}; again #{again} (quarantined after #{max} failed starts in a row)",
              meta(state)
            )

        if retry == :backoff,
          do: Process.send_after(self(), {:retry_start, state.out.port, failures}, delay)

        state
    end
  end

  # Leaves the host's slot (its process no longer runs it, so a crash loop stops); the
  # deliveries in flight go back to the front of the queue, uncharged. Events keep
  # arriving and waiting in the bounded queue. release/1 ends it. Its health is
  # `quarantined` now (a health event says so).
  defp quarantine_now(state, reason) do
    state = requeue_inflight(state)
    if state.host_pid && state.slot, do: Symbiont.Host.detach(state.host_pid, state.slot)

    %{state | quarantined: reason, status: :detached, slot: nil, out: Out.to(state.out, nil)}
    |> analytics(up_at: nil, up_since: nil)
    |> refresh_health()
  end

  ## Frames of our slot (PROTOCOL.md §8)

  defp frame({:agent_ready, _slot, info}, %{status: :starting} = state) do
    state = subscribe(state, info)

    state =
      %{state | status: :ready}
      |> rare(starts: state.rare.starts + 1, failures: 0)
      |> analytics(up_at: now_ms(), up_since: System.system_time(:millisecond))

    state = %{state | progress_at: now_ms()}
    state = state |> set_signal(:start, nil, "started") |> observe()

    # Deliveries in flight go again, in order; then what waits in the queue (after a crash
    # with several in flight, they are all there: see charge_crash/3).
    state =
      for {seq, what, frame, _attempts, _at} <- Delivery.in_flight(state.delivery),
          reduce: state,
          do: (state -> emit(state, frame, journaled_seq(seq, what)))

    state = drain(state)

    # Last, so that whoever waits for this event finds the agent subscribed and serving.
    Symbiont.Telemetry.execute([:symbiont, :agent, :start], %{}, %{
      agent: state.name,
      id: state.id,
      host: state.host,
      restarts: state.rare.starts - 1
    })

    state
  end

  defp frame({:agent_failed, _slot, error}, %{status: :starting} = state),
    do: start_failed(state, error, :backoff)

  # An ack of a seq that is no longer in flight (the deliveries went back to the queue, in
  # a quarantine) is dropped with its state: they go again, from the checkpoint before.
  defp frame({:ack, _slot, seq, state_bin}, state) do
    case take_inflight(%{state | progress_at: now_ms()}, seq) do
      {[], state} -> state
      {acked, state} -> state |> acked(acked, state_bin, seq) |> drain()
    end
  end

  # The deliveries before the nacked one were handled (the host acks them first).
  defp frame({:nack, _slot, seq, error}, state) do
    case take_inflight(%{state | progress_at: now_ms()}, seq) do
      {[], state} ->
        state

      {taken, state} ->
        {before, [{^seq, what, _frame, attempts, _} = failed]} = Enum.split(taken, -1)

        state =
          if before == [],
            do: state |> work([failed], now_us()) |> elem(0),
            else: acked(state, before, state.state_bin, nil)

        handled(state, [failed], :error, error)

        Logger.error(
          "agent #{state.id} failed on #{describe(what)}: #{format_remote_error(error)}",
          meta(state)
        )

        rare(state, last_error: error)
        |> retry_or_give_up(what, attempts + 1, "handler_failed", error)
        |> window_failed()
        |> observe()
        |> drain()
    end
  end

  # §8.1: the seq of a publish is that of a delivery the agent was given (or of the
  # checkpoint it started from). One above them all is a lie that would poison the memory
  # of `dedupe: true` subscribers (their window would move past every real id): dropped.
  defp frame({:publish, slot, topic, payload, {seq, _n}}, %{delivery: %{seq: highest}} = state)
       when seq > highest do
    Logger.error(
      "agent #{state.id}: publish on #{inspect(topic)} with seq #{seq}, above the highest seq delivered (#{highest}), dropped (PROTOCOL.md §8.1)",
      meta(state)
    )

    handled_publish(state, slot, topic, payload)
  end

  defp frame({:publish, slot, topic, payload, seq_n}, state) do
    # A refused publish (over :max_topics, or on a topic of the BEAM's) still frees its
    # share of the window.
    case own_topic(state, topic) do
      {:ok, topic, state} ->
        id = with {seq, n} <- seq_n, do: {state.id, state.rare.incarnation, seq, n}
        event = %Symbiont.Event{topic: topic, payload: payload, from: state.name, id: id}
        Symbiont.Mesh.publish(Symbiont.Mesh, event)
        state = rare(state, published: state.rare.published + 1)
        handled_publish(state, slot, topic, payload)

      {:refused, state} ->
        handled_publish(state, slot, topic, payload)
    end
  end

  # §8.3: the agent's report about itself, published by this server, stamped with the
  # agent in this slot (its name, replica and version): the frame names nobody.
  defp frame({:health, slot, kind, reason, metrics, size}, state) do
    Symbiont.Health.publish(kind, state.name, reason, metrics,
      by: "agent",
      id: state.id,
      version: describe_logic(state.spec)
    )

    # What it says is one of its signals (see set_signal/5), until it says otherwise or
    # starts again; its own event is on symbiont.health already: not said twice.
    state =
      if kind == "healthy",
        do:
          set_signal(
            state,
            :reported,
            nil,
            if(reason == "", do: "it says so", else: reason),
            kind
          ),
        else: set_signal(state, :reported, {kind, reason, metrics}, nil, kind)

    handled_window(state, slot, @health_topic, size)
  end

  defp frame(frame, state) do
    Logger.warning(
      "agent #{state.id}: #{elem(frame, 0)} frame while #{state.status}, dropped",
      meta(state)
    )

    state
  end

  # The :max_topics of "Topics" in Symbiont.Agent, and the BEAM's own topics
  # (Symbiont.ControlPlane), for a host that does not keep to them (the Python host
  # refuses first). The topic an event goes out with is the agent's own copy: the one in
  # the frame is part of the frame's binary, which the topology's row (and every queue it
  # reaches) would otherwise keep alive whole.
  defp own_topic(%{rare: %{pub_topics: topics}} = state, topic) do
    case topics do
      %{^topic => own} -> {:ok, own, state}
      _ -> new_topic(state, topic, topics)
    end
  end

  defp new_topic(state, topic, topics) do
    max = Symbiont.Agent.max_topics(state.spec)
    max_bytes = Symbiont.Event.max_topic_bytes()

    cond do
      Symbiont.ControlPlane.reserved?(topic) ->
        refuse_reserved(state, topic)

      byte_size(topic) > max_bytes ->
        refuse_topic(
          state,
          "published on a topic of #{byte_size(topic)} bytes (at most #{max_bytes})"
        )

      map_size(topics) >= max ->
        refuse_topic(
          state,
          "published on more than #{max} distinct topics (its :max_topics) since it started; " <>
            "publishes on new topics are refused (the first: #{inspect(topic, printable_limit: 100)})"
        )

      true ->
        own = :binary.copy(topic)
        {:ok, own, rare(state, pub_topics: Map.put(topics, own, own))}
    end
  end

  defp refuse_topic(state, reason) do
    state = rare(state, refused_publishes: state.rare.refused_publishes + 1)

    if state.rare.topics_told do
      {:refused, state}
    else
      Logger.error("agent #{state.id} #{reason}", meta(state))

      metrics = %{
        "max_topics" => Symbiont.Agent.max_topics(state.spec),
        "refused" => state.rare.refused_publishes
      }

      {:refused,
       state |> rare(topics_told: true) |> set_signal(:topics, {"degraded", reason, metrics})}
    end
  end

  # A host that went around its own refusal (PROTOCOL.md §8): dropped, counted, and
  # logged once per start of the agent.
  defp refuse_reserved(state, topic) do
    state = rare(state, refused_publishes: state.rare.refused_publishes + 1)

    if state.rare.reserved_told do
      {:refused, state}
    else
      Logger.error(
        "agent #{state.id} published on a topic of the BEAM's, dropped: " <>
          "#{Symbiont.ControlPlane.refusal(topic)} (its host did not refuse it; the next " <>
          "ones are dropped without a word)",
        meta(state)
      )

      {:refused, rare(state, reserved_told: true)}
    end
  end

  ## Flow control of publishes (PROTOCOL.md §8.2, Symbiont.Host.Credit)

  # A publish handled: its share of the window goes back to the host a quarter window at
  # a time. A batch is of one process and slot: a publish of another gives the batch
  # back first (the owner drops what is for a process or slot that is gone).
  defp handled_publish(state, slot, topic, payload),
    do: handled_window(state, slot, topic, Credit.publish_cost(topic, payload))

  # A frame of the slot's window that costs `cost` bytes (a publish; a health report, its
  # frame's size) handled.
  defp handled_window(state, slot, topic, cost) do
    port = state.out.port

    state =
      case state.credit do
        {^port, ^slot, _, _, _, _} ->
          state

        {_, _, _, _, _, retry} ->
          %{give_back(state, :now) | credit: {port, slot, 0, 0, [], retry}}
      end

    {_, _, frames, bytes, topics, retry} = state.credit
    frames = frames + 1
    bytes = bytes + cost
    topics = if topic in topics or length(topics) >= 8, do: topics, else: [topic | topics]
    state = %{state | credit: {port, slot, frames, bytes, topics, retry}}

    if not retry and Credit.due?(frames, bytes),
      do: give_back(state, :checked),
      else: state
  end

  # The publishes go back to the host, unless (:checked) an agent on this node that
  # subscribes to where they went is backlogged: then again after a while, so that a
  # host publishing faster than its subscribers take events in waits for them.
  defp give_back(%{credit: {_, _, 0, _, _, _}} = state, _how), do: state

  defp give_back(%{credit: {port, slot, frames, bytes, topics, retry}} = state, how) do
    if how == :checked and backlogged?(topics) do
      unless retry, do: Process.send_after(self(), :give_back, @backlog_retry_ms)
      %{state | credit: {port, slot, frames, bytes, topics, true}}
    else
      if port && state.host_pid,
        do: GenServer.cast(state.host_pid, {:credit, port, slot, frames, bytes})

      %{state | credit: {port, slot, 0, 0, [], retry}}
    end
  end

  defp backlogged?(topics) do
    Enum.any?(topics, fn topic ->
      Symbiont.Mesh.local_agents(Symbiont.Mesh, topic)
      |> Enum.any?(
        &match?({:message_queue_len, n} when n > @backlog, Process.info(&1, :message_queue_len))
      )
    end)
  end

  defp acked(state, acked, state_bin, seq) do
    handled(state, acked, :ok)
    n = length(acked)
    now = System.monotonic_time(:millisecond)

    %{
      sample(state, acked)
      | active_at: now,
        delivery: Delivery.handled(state.delivery, n),
        state_bin: state_bin,
        acked_seq: seq || state.acked_seq,
        handled: state.handled + n,
        window: Window.ok(state.window, n)
    }
    |> journal_ack(acked)
    |> observe_acked(acked, Window.counts(state.window), now)
  end

  # After an ack: a window that had failures may give another health now; the row shows
  # the window as it is while it holds failures or fills (its first 20 deliveries), and a
  # suspect acked is no longer one; otherwise the row (its p99) is written again at most
  # every second.
  defp observe_acked(state, acked, {n, failures}, now) do
    state = if failures > 0, do: rate_signal(state), else: state

    cond do
      failures > 0 or n < Window.size() -> observe(state)
      now - state.rare.observed_at >= @observe_ms -> observe(state)
      Enum.any?(acked, &(elem(&1, 3) > 0)) -> observe(state)
      true -> state
    end
  end

  # A duplicate (by id) of an event a `dedupe: true` agent has accepted is dropped.
  defp dedupe(%{dedupe: nil} = state, _event), do: {:ok, state}

  defp dedupe(state, event) do
    {result, dedupe} = Dedupe.check(state.dedupe, event.id)
    {result, %{state | dedupe: dedupe}}
  end

  # Topics and timers are taken once: a restarted process runs the same class.
  defp subscribe(%{rare: %{subscribed: true}} = state, _info), do: state

  defp subscribe(state, info) do
    topics = subscribable(state, List.wrap(info["topics"]))
    timers = List.wrap(info["timers"])
    # Replicas of an agent form a queue group named after it: one of them gets each event.
    for topic <- topics do
      :ok =
        Symbiont.Mesh.subscribe(Symbiont.Mesh, topic,
          group: state.name,
          metadata: %{
            agent: state.name,
            load:
              {state.rare.load, state.spec.max_queue, state.spec.max_queue_bytes,
               state.spec.overflow}
          }
        )
    end

    for %{"name" => name, "every_ms" => ms} <- timers, is_integer(ms) and ms > 0 do
      :timer.send_interval(ms, {:tick, name})
    end

    rare(state, topics: topics, timers: timers, subscribed: true)
  end

  # At most :max_topics topics of at most max_topic_bytes each ("Topics" in
  # Symbiont.Agent): the Python host fails the start of an agent with more; from a host
  # that does not, the first that fit are taken, and the rest is logged.
  defp subscribable(state, topics) do
    max = Symbiont.Agent.max_topics(state.spec)
    max_bytes = Symbiont.Event.max_topic_bytes()
    {short, long} = topics |> Enum.uniq() |> Enum.split_with(&(byte_size(&1) <= max_bytes))
    {kept, over} = Enum.split(short, max)

    if long != [] or over != [] do
      Logger.error(
        "agent #{state.id} asked for #{length(topics)} topics; subscribed to #{length(kept)} " <>
          "(at most #{max}, its :max_topics, of at most #{max_bytes} bytes each)",
        meta(state)
      )
    end

    Enum.map(kept, &:binary.copy/1)
  end

  ## Upgrade and retirement

  # An upgrade goes on once nothing is in flight; a retirement hands what waits to its
  # heir and ends once nothing is in flight.
  defp settle(%{rare: %{upgrading: {from, spec}}, delivery: %{in_flight: 0}} = state) do
    old = state.spec
    if state.host_pid, do: Symbiont.Host.detach(state.host_pid, state.slot)
    GenServer.reply(from, {:ok, old})
    Logger.info("agent #{state.id} now runs #{describe_logic(spec)}", meta(state))

    state =
      rare(%{state | spec: spec, status: :detached, out: Out.to(state.out, nil)}, upgrading: nil)

    # Another version: its signals are its own (Symbiont.Signals), compared with the
    # version before's baseline until it has one of its own.
    state =
      if describe_logic(old) == describe_logic(spec),
        do: state,
        else:
          analytics(state,
            prev_version: describe_logic(old),
            version_base: {state.handled, state.failed},
            crash_log: []
          )

    # A restart on purpose (a new version, or the same one started again): it is judged
    # from now on. A quarantined agent stays out of its host.
    state = state |> fresh_start("now runs #{describe_logic(spec)}") |> observe()
    if state.host_pid && state.quarantined == nil, do: reattach(state), else: state
  end

  # A move goes on once nothing is in flight: out of its slot, into one of the new host.
  defp settle(%{rare: %{moving: {from, host}}, delivery: %{in_flight: 0}} = state) do
    if state.host_pid && state.slot, do: Symbiont.Host.detach(state.host_pid, state.slot)

    Logger.info(
      "agent #{state.id} moves from host #{inspect(state.host)} to #{inspect(host)}",
      meta(state)
    )

    GenServer.reply(from, :ok)
    state = rare(%{state | status: :detached, out: Out.to(state.out, nil)}, moving: nil)
    state |> move_to(host) |> observe()
  end

  defp settle(%{rare: %{retiring: {_from, heir}}} = state) do
    {queued, delivery} = Delivery.take_queue(state.delivery)
    items = queued ++ state.rare.held
    state = state |> put_delivery(delivery) |> rare(held: [])

    for {%Symbiont.Event{} = event, attempts} <- items do
      if heir,
        do: send(heir, event),
        else: dead_letter(state, event, "retired", attempts, nil)
    end

    state = journal_done(state, Enum.map(items, &elem(&1, 0)))

    # Once nothing is in flight it lingers a little, still handing over what arrives: a
    # publisher that picked it just before it unsubscribed may have sent one more.
    if state.delivery.in_flight == 0 and not state.rare.lingering do
      Process.send_after(self(), :retired, @linger_ms)
      rare(state, lingering: true)
    else
      state
    end
  end

  defp settle(state), do: state

  # The latencies (send to ack) and handling times of deliveries acked together, now.
  defp sample(state, acked) do
    now = now_us()
    at = div(now, 1000)
    {state, each} = work(state, acked, now)

    samples =
      Enum.reduce(acked, state.samples, fn item, acc ->
        [{at, now - to_us(elem(item, 4)), each} | acc]
      end)

    {n, last, busy} = state.sampling
    n = n + length(acked)

    if n > 2 * @samples,
      do: %{state | samples: Enum.take(samples, @samples), sampling: {@samples, last, busy}},
      else: %{state | samples: samples, sampling: {n, last, busy}}
  end

  # The handler's time on `items` (in the order sent), answered now (µs): from the send of
  # the first, or from the last answer when it waited behind another delivery in the
  # host, to now; shared evenly. Added to the time it has worked in all (busy_us, see
  # Symbiont.Signals). Returns the state and each item's share.
  defp work(state, [{_, _, _, _, sent_at} | _] = items, now) do
    {n, last, busy} = state.sampling
    sent_at = to_us(sent_at)
    from = if last == nil, do: sent_at, else: max(sent_at, last)
    spent = max(now - from, 0)
    {%{state | sampling: {n, now, busy + spent}}, div(spent, length(items))}
  end

  defp now_us, do: System.monotonic_time(:microsecond)

  # A delivery's sent_at (native units, as its telemetry span's) in µs.
  defp to_us(native), do: System.convert_time_unit(native, :native, :microsecond)

  # The end of each delivery's [:symbiont, :agent, :handle] span (Symbiont.Telemetry):
  # :stop when acked (:ok), :exception when nacked (:error, with the handler's error) or
  # put back in the queue (:requeued).
  defp handled(state, items, result, error \\ nil) do
    if Symbiont.Telemetry.attached?(), do: emit_handled(state, items, result, error)
    :ok
  end

  defp emit_handled(state, items, result, error) do
    now = System.monotonic_time()

    Enum.each(items, fn {seq, what, _frame, attempts, sent_at} ->
      measurements = %{duration: now - sent_at, monotonic_time: now}
      metadata = Map.put(span_metadata(state, seq, what, attempts), :result, result)

      case result do
        :ok ->
          Symbiont.Telemetry.execute([:symbiont, :agent, :handle, :stop], measurements, metadata)

        :error ->
          metadata = Map.merge(metadata, %{kind: :error, reason: error, stacktrace: []})

          Symbiont.Telemetry.execute(
            [:symbiont, :agent, :handle, :exception],
            measurements,
            metadata
          )

        :requeued ->
          metadata =
            Map.merge(metadata, %{result: :error, kind: :exit, reason: :requeued, stacktrace: []})

          Symbiont.Telemetry.execute(
            [:symbiont, :agent, :handle, :exception],
            measurements,
            metadata
          )
      end
    end)
  end

  defp span_metadata(state, seq, what, attempts) do
    {topic, timer} =
      case what do
        %Symbiont.Event{topic: topic} -> {topic, nil}
        {:tick, name, _seq} -> {nil, name}
      end

    %{
      agent: state.name,
      id: state.id,
      host: state.host,
      topic: topic,
      timer: timer,
      attempt: attempts + 1,
      telemetry_span_context: {state.id, seq, attempts}
    }
  end

  ## Deliveries

  # An event or tick: sent at once while the credit window has room and nothing waits
  # before it, queued otherwise; a queue full in events or in bytes applies the overflow
  # policy. One larger than the queue may hold in bytes goes to the dead letters.
  # `admitted?`: a checked publish reserved room for it in the load (Symbiont.Mesh): a
  # :reject queue takes it whatever it holds now (more than its bounds only while failed
  # deliveries wait to be tried again: they go back to the queue as they fail), and the
  # reservation becomes its place in the queue, or goes back if it is not queued.
  defp accept(state, what, admitted? \\ false) do
    %{spec: spec, delivery: delivery} = state
    size = Delivery.size_of(what)

    admission =
      Delivery.admission(delivery, size,
        max_queue_bytes: spec.max_queue_bytes,
        overflow: spec.overflow,
        admitted?: admitted?,
        sendable?: sendable?(state, size),
        room?: room?(state, size)
      )

    case admission do
      :too_large ->
        state |> release(admitted?, what) |> too_large_to_queue(what, size)

      :send ->
        state |> release(admitted?, what) |> send_delivery(what, 0)

      :enqueue ->
        state |> enqueue(what, size, admitted?) |> check_load()

      :drop_oldest ->
        {dropped, delivery} = Delivery.make_room(delivery, size, spec)
        state = put_delivery(state, delivery)
        state = Enum.reduce(dropped, state, &overflowed(&2, &1))
        state |> enqueue(what, size, admitted?) |> check_load()

      :overflow ->
        state |> release(admitted?, what) |> overflowed(what)
    end
  end

  # Room for an event of `size` bytes that no publisher reserved room for. In a :reject
  # queue, beside the reservations on their way (the load's slots count the queue and
  # them), so that it never takes the room of an event a publisher was told :ok for; in
  # a :drop_oldest one (which promises no publisher anything), in the queue itself.
  defp room?(%{spec: %{overflow: :reject} = spec} = state, size) do
    load = state.rare.load

    :atomics.get(load, 1) < spec.max_queue and
      :atomics.get(load, 3) + size <= spec.max_queue_bytes
  end

  defp room?(state, size), do: Delivery.room?(state.delivery, size, state.spec)

  # An event its queue could never hold (a checked publish is refused it, as :too_large).
  defp too_large_to_queue(state, what, size) do
    message =
      "#{describe(what)} has a payload of #{size} bytes, over the max_queue_bytes of agent " <>
        "#{inspect(state.id)} (#{state.spec.max_queue_bytes} bytes)"

    Logger.error("agent #{state.id}: #{message}; dead-lettered", meta(state))
    error = %{"type" => "queue_too_large", "message" => message, "traceback" => ""}
    dead_letter(state, what, "too_large", 0, error)
    journal_done(rare(state, dropped: state.rare.dropped + 1), [what])
  end

  # An event the agent takes (`then`: accept/3, or hold/2 while its journal cannot be
  # written), unless it is a copy a `dedupe: true` agent has seen.
  defp take(state, event, admitted?, then) do
    case dedupe(state, event) do
      {:ok, state} ->
        {event, state} = number(state, event)
        {event, state} = journal_accept(state, event)
        then.(%{state | active_at: System.monotonic_time(:millisecond)}, event)

      {:duplicate, state} ->
        release(state, admitted?, event)
    end
  end

  # The room a checked publish reserved for an event that will not be queued goes back.
  defp release(state, false, _what), do: state

  defp release(state, true, what) do
    :atomics.sub(state.rare.load, 1, 1)
    :atomics.sub(state.rare.load, 3, Delivery.size_of(what))
    state
  end

  # While its journal cannot be written, a durable agent refuses events (to the dead
  # letters)...
  defp refuse(state, event) do
    dead_letter(state, event, "journal_unavailable", 0, %{
      "type" => "journal_unavailable",
      "message" => Journal.format_error(Journal.error(state.journal)),
      "traceback" => ""
    })

    rare(state, refused: state.rare.refused + 1)
  end

  # ... but one that a checked publish admitted before it failed (its publisher was told
  # :ok) is held, to be journaled with the others once the disk takes writes again.
  defp hold(state, event), do: rare(state, held: state.rare.held ++ [{event, 0}])

  defp journal_up?(%{journal: nil}), do: true
  defp journal_up?(%{journal: journal}), do: Journal.available?(journal)

  # The next seq, for an event (in the event: its Symbiont.Event.seq) or a tick
  # ({:tick, name, seq}).
  defp number(state, what) do
    {what, delivery} = Delivery.number(state.delivery, what)
    {what, %{state | delivery: delivery}}
  end

  # Deliveries may go while a process runs the agent and it is not upgrading, moving or
  # retiring: see Delivery.sendable?/4 for the credit window (one at a time while on
  # probation).
  defp sendable?(state, size),
    do: Delivery.sendable?(state.delivery, size, open?(state), state.spec)

  defp open?(%{status: :ready, rare: %{upgrading: nil, retiring: nil, moving: nil}}), do: true
  defp open?(_state), do: false

  # An item of `size` bytes goes to the back of the queue; `reserved?`: the load counts it
  # already (a checked publish reserved its room), and the reservation is now its place.
  defp enqueue(state, what, size, reserved?) do
    delivery = Delivery.enqueue(state.delivery, what, 0)
    put_delivery(state, delivery, if(reserved?, do: {1, size}, else: {0, 0}))
  end

  # The queue and the load publishers read change together (the load holds their
  # reservations too: it changes by as much as the queue, never set). `reserved`: the
  # room a checked publish reserved that is now an item's place in the queue.
  defp put_delivery(state, delivery, reserved \\ {0, 0}) do
    %{queued: n0, queued_bytes: b0} = state.delivery
    {rn, rb} = reserved
    load = state.rare.load
    dn = delivery.queued - n0 - rn
    db = delivery.queued_bytes - b0 - rb
    if dn != 0, do: :atomics.add(load, 1, dn)
    if db != 0, do: :atomics.add(load, 3, db)
    %{state | delivery: delivery}
  end

  # After a failed attempt (a nack, or the host dying while on it): again, first in line,
  # until max_attempts; then the dead letters, with the attempts and the last error (see
  # Delivery.verdict/4).
  defp retry_or_give_up(state, what, attempts, reason, error) do
    verdict = Delivery.verdict(what, attempts, state.spec.max_attempts, fallback?(state))
    delivery = if verdict == :retry, do: Delivery.push_front(state.delivery, what, attempts)

    failed(
      put_delivery(state, delivery || state.delivery),
      what,
      attempts,
      verdict,
      reason,
      error
    )
  end

  defp fallback?(state), do: is_pid(state.rare.fallback)

  # A failed attempt's verdict carried out (the delivery already has a retried one back).
  defp failed(state, _what, _attempts, :retry, _reason, _error),
    do: rare(state, redelivered: state.rare.redelivered + 1)

  defp failed(state, what, _attempts, :fallback, _reason, _error) do
    send(state.rare.fallback, what)
    journal_done(%{state | failed: state.failed + 1}, [what])
  end

  defp failed(state, what, attempts, :give_up, reason, error) do
    dead_letter(state, what, reason, attempts, error)
    journal_done(%{state | failed: state.failed + 1}, [what])
  end

  defp overflowed(state, what) do
    dead_letter(state, what, "overloaded", 0, nil)
    journal_done(rare(state, dropped: state.rare.dropped + 1), [what])
  end

  defp send_delivery(state, what, attempts) do
    seq = Delivery.seq_of(what)

    fields =
      case what do
        %Symbiont.Event{topic: topic, payload: payload} ->
          ["event", state.slot, seq, topic, %MsgPack.Bin{data: payload}]

        {:tick, name, _seq} ->
          ["tick", state.slot, seq, name]
      end

    frame = framed(fields)

    if IO.iodata_length(frame) - 4 > state.rare.max_frame,
      do: too_large(state, what, IO.iodata_length(frame) - 4),
      else: put_in_flight(state, seq, what, frame, attempts)
  end

  # PROTOCOL.md §1.4: the host would have to refuse the frame and restart, again at each
  # attempt. The event goes to the dead letters at once, the agent goes on.
  defp too_large(state, what, size) do
    message =
      "#{describe(what)} makes a frame of #{size} bytes, over the max_frame of host #{inspect(state.host)} (#{state.rare.max_frame} bytes)"

    Logger.error("agent #{state.id}: #{message}; dead-lettered", meta(state))
    error = %{"type" => "frame_too_large", "message" => message, "traceback" => ""}
    dead_letter(state, what, "too_large", 0, error)
    journal_done(rare(%{state | failed: state.failed + 1}, last_error: error), [what])
  end

  defp put_in_flight(state, seq, what, frame, attempts) do
    progress_at = if state.delivery.in_flight == 0, do: now_ms(), else: state.progress_at
    sent_at = System.monotonic_time()

    if Symbiont.Telemetry.attached?() do
      Symbiont.Telemetry.execute(
        [:symbiont, :agent, :handle, :start],
        %{monotonic_time: sent_at, system_time: System.system_time()},
        span_metadata(state, seq, what, attempts)
      )
    end

    %{
      state
      | delivery: Delivery.put_in_flight(state.delivery, what, frame, attempts, sent_at),
        progress_at: progress_at
    }
    |> emit(frame, journaled_seq(seq, what))
    |> arm_stall_check()
  end

  ## A handler that does not stop (see :handler_timeout in Symbiont.Agent)

  defp handler_timeout(spec), do: Map.get(spec, :handler_timeout, 30_000)

  defp arm_stall_check(%{stall_check: false} = state) do
    case handler_timeout(state.spec) do
      :infinity ->
        state

      ms ->
        Process.send_after(self(), :stall_check, ms + @stall_grace_ms)
        %{state | stall_check: true}
    end
  end

  defp arm_stall_check(state), do: state

  # The host cancels a handler at its timeout and acks slow batches as it goes: nothing at
  # all for the timeout plus the grace means a handler that does not stop. Only a new
  # process frees the agent, and the delivery is charged an attempt when it goes down.
  defp stall_check(%{status: :ready, delivery: %{in_flight: n}} = state) when n > 0 do
    limit = handler_timeout(state.spec) + @stall_grace_ms
    idle = now_ms() - state.progress_at

    if idle >= limit do
      Logger.error(
        "agent #{state.id} heard nothing from its host for #{idle} ms with #{n} deliveries in flight, past its handler_timeout of #{handler_timeout(state.spec)} ms: restarting host #{inspect(state.host)}",
        meta(state)
      )

      Symbiont.Host.restart(
        state.host_pid,
        state.out.port,
        {:stalled, state.id, handler_timeout(state.spec)}
      )

      state
    else
      Process.send_after(self(), :stall_check, limit - idle)
      %{state | stall_check: true}
    end
  end

  defp stall_check(state), do: state

  defp now_ms, do: System.monotonic_time(:millisecond)

  defp framed(fields), do: fields |> Protocol.encode() |> Framer.frame()

  # A batch of frames that this one fills is written at once: the journal goes first. A
  # delivery of event `jid` whose journal record that commit failed to write is not
  # emitted: the event was moved to the held ones (journal_failed/2).
  defp emit(state, frame, jid \\ nil)

  defp emit(%{journal: j} = state, frame, jid) when j != nil do
    state = if Out.flushes?(state.out, frame), do: commit(state), else: state

    if jid != nil and not Journal.available?(state.journal) and
         not Journal.durable?(state.journal, jid),
       do: state,
       else: %{state | out: Out.emit(state.out, frame)}
  end

  defp emit(state, frame, _jid), do: %{state | out: Out.emit(state.out, frame)}

  # The journal's number of a delivery: events have one, ticks are not journaled.
  defp journaled_seq(seq, %Symbiont.Event{}), do: seq
  defp journaled_seq(_seq, _tick), do: nil

  ## The journal of a durable agent (Symbiont.Journal)

  # Where a journal goes: a placed agent's is the agent's, wherever it runs. One that
  # cannot be opened (unreadable, corrupt) leaves the agent running without a state, not
  # attached to its host, refusing events, trying again (retry_journal/1).
  defp open_journal(%{spec: spec} = state) do
    if Map.get(spec, :durable, false) do
      path = Journal.path(state.id, Map.get(spec, :nodes) != nil)

      case Journal.open(path) do
        {:ok, journal, restored} ->
          {:ok, restore(%{state | journal: journal}, restored)}

        {:error, reason} ->
          {:error, reason, %{state | journal: Journal.unopened(path, reason)}}
      end
    else
      {:ok, state}
    end
  end

  # The last journaled checkpoint, and the events not finished, in the order accepted,
  # each with its seq. A new journal gets a first checkpoint at once: the incarnation
  # that goes with the seqs it numbers.
  defp restore(state, %{checkpoint: nil, pending: []}), do: first_checkpoint(state)

  defp restore(state, %{checkpoint: checkpoint, pending: pending, next: next}) do
    state =
      if checkpoint,
        do: restore_checkpoint(state, checkpoint),
        else: first_checkpoint(state)

    n = length(pending)

    delivery =
      Delivery.append(Delivery.seen_seq(state.delivery, next - 1), Enum.map(pending, &{&1, 0}))

    state = put_delivery(state, delivery)
    # Accepted after the checkpoint's dedupe memory was taken: their ids join it.
    dedupe = state.dedupe && Enum.reduce(pending, state.dedupe, &Dedupe.remember(&2, &1.id))
    state = %{state | dedupe: dedupe}

    Logger.info(
      "agent #{state.id} resumed from its journal: #{n} events pending#{if checkpoint, do: ", state restored", else: ""}",
      meta(state)
    )

    state
  end

  # What the journal keeps with each ack: the state the host acked with it and the seq it
  # matches, the incarnation of the seqs (so that a restored agent's publishes have the
  # ids they had before: PROTOCOL.md §8.1), and a `dedupe: true` agent's memory of the
  # event ids it has accepted (so that it drops the same duplicates).
  defp checkpoint(state) do
    %{
      state: state.state_bin,
      seq: state.acked_seq,
      incarnation: state.rare.incarnation,
      dedupe: state.dedupe
    }
  end

  defp restore_checkpoint(state, checkpoint) do
    %{
      state
      | state_bin: checkpoint.state,
        acked_seq: Map.get(checkpoint, :seq, 0),
        delivery: Delivery.seen_seq(state.delivery, Map.get(checkpoint, :seq, 0)),
        dedupe: if(state.dedupe, do: Map.get(checkpoint, :dedupe) || state.dedupe)
    }
    |> rare(incarnation: Map.get(checkpoint, :incarnation, state.rare.incarnation))
  end

  defp first_checkpoint(state) do
    journal = Journal.checkpoint(state.journal, checkpoint(state))
    commit(%{state | journal: journal})
  end

  defp journal_accept(%{journal: nil} = state, event), do: {event, state}

  defp journal_accept(state, event) do
    {event, journal} = Journal.accept(state.journal, event)
    {event, %{state | journal: journal}}
  end

  # Events the agent is finished with: handled, given up, or handed to another.
  defp journal_done(%{journal: nil} = state, _whats), do: state
  defp journal_done(state, whats), do: %{state | journal: Journal.done(state.journal, whats)}

  defp journal_ack(%{journal: nil} = state, _acked), do: state

  defp journal_ack(state, acked) do
    journal =
      state.journal
      |> Journal.done(Enum.map(acked, &elem(&1, 1)))
      |> Journal.checkpoint(checkpoint(state))

    %{state | journal: journal}
  end

  # Group commit: once nothing more waits in the mailbox, after @journal_batch records,
  # or before the frames waiting are written (Out.due?/1); always before the owner's
  # frames reach the host, so the host never sees an event that is not on disk yet.
  defp maybe_commit(%{journal: nil} = state), do: state

  defp maybe_commit(state) do
    cond do
      not Journal.dirty?(state.journal) -> state
      Journal.batched(state.journal) >= @journal_batch -> commit(state)
      Out.due?(state.out) -> commit(state)
      Process.info(self(), :message_queue_len) == {:message_queue_len, 0} -> commit(state)
      true -> state
    end
  end

  defp commit(%{journal: nil} = state), do: state
  # Unavailable: the retry timer writes it again (retry_journal/1).
  defp commit(%{journal: %Journal{error: error}} = state) when error != nil, do: state

  defp commit(state) do
    case Journal.commit(state.journal, fn -> journaled(state) end) do
      {:ok, journal} -> %{state | journal: journal}
      {:error, reason, journal} -> journal_failed(%{state | journal: journal}, reason)
    end
  end

  # The events of the journal still pending, in the order accepted (for a compaction, or
  # to write the journal anew): in flight, waiting, and held.
  defp journaled(state) do
    held = for {%Symbiont.Event{} = e, _} <- state.rare.held, do: e
    Enum.sort_by(Delivery.events(state.delivery) ++ held, & &1.seq)
  end

  ## A journal the disk refuses (see "When the disk refuses" in Symbiont.Journal)

  # The journal could not be written (or opened): the agent stops accepting events
  # (checked publishes on this node are refused, the others dead-lettered), says so on
  # symbiont.health, and tries again later. The events whose journal record did not
  # reach the disk are held back: not accepted, never shown to the host, and written
  # with the rest when the journal is written again. What was on disk already is served
  # as before (its acks wait in memory for the journal).
  defp journal_failed(state, reason) do
    :atomics.put(state.rare.load, 2, 1)

    state
    |> hold_undurable()
    |> report_journal(reason)
    |> rare(journal_retry: 0)
    |> schedule_journal_retry()
  end

  defp report_journal(state, reason) do
    message = Journal.format_error(reason)

    Logger.error(
      "agent #{state.id}: #{message}; it accepts no events until its journal works again",
      meta(state)
    )

    metrics = %{"queue" => state.delivery.queued, "held" => length(state.rare.held)}
    state |> set_signal(:journal, {"failing", message, metrics}) |> observe()
  end

  # The deliveries and waiting events whose journal record is not on disk move to the
  # held ones; their frames, not yet written to the host (the journal is committed before
  # every write), are taken out of the batch.
  defp hold_undurable(state) do
    durable = state.journal.durable
    {gone, waiting, frames, delivery} = Delivery.take_events(state.delivery, &(&1.seq > durable))
    held = Enum.sort_by(state.rare.held ++ gone ++ waiting, &elem(&1, 0).seq)

    %{state | out: Out.drop(state.out, MapSet.new(frames))}
    |> put_delivery(delivery)
    |> rare(held: held)
  end

  defp schedule_journal_retry(state) do
    n = state.rare.journal_retry + 1
    delay = min(@journal_retry_max_ms, @journal_retry_ms * Integer.pow(2, min(n - 1, 10)))
    Process.send_after(self(), {:journal_retry, n}, delay)
    rare(state, journal_retry: n)
  end

  # Opens the journal that could not be opened, or writes anew (from memory: the state
  # now, and every event it holds) the one that could not be written. A new reason is
  # reported; the same one again is not.
  defp retry_journal(%{journal: old} = state) do
    if Journal.opened?(old) do
      case Journal.recover(old, checkpoint(state), journaled(state)) do
        {:ok, journal} -> journal_back(%{state | journal: journal})
        {:error, reason, journal} -> retry_later(%{state | journal: journal}, reason, old)
      end
    else
      case open_journal(state) do
        # Opened, and its first write (a new journal's checkpoint) done or already
        # reported (journal_failed/2).
        {:ok, state} ->
          state = if Journal.available?(state.journal), do: journal_back(state), else: state
          attach(state)

        {:error, reason, state} ->
          retry_later(state, reason, old)
      end
    end
  end

  defp retry_later(state, reason, old) do
    state = if reason != Journal.error(old), do: report_journal(state, reason), else: state
    schedule_journal_retry(state)
  end

  # Written again: the held events are accepted now (they were written with the rest) and
  # go back to the queue, after those that waited there; events are accepted again.
  defp journal_back(state) do
    :atomics.put(state.rare.load, 2, 0)
    held = state.rare.held
    message = "the journal #{state.journal.path} works again"

    Logger.warning(
      "agent #{state.id}: #{message}; it accepts events again (#{length(held)} held meanwhile)",
      meta(state)
    )

    %{state | overloaded: false}
    |> put_delivery(Delivery.append(state.delivery, held))
    |> rare(held: [], journal_retry: 0)
    |> set_signal(:load, nil, message)
    |> set_signal(:journal, nil, message)
    |> observe()
    |> drain()
  end

  defp reply(result) do
    state = maybe_commit(elem(result, tuple_size(result) - 1))
    count(state)
    Out.reply(put_elem(result, tuple_size(result) - 1, state))
  end

  # Sends what waits while the credit window has room.
  defp drain(%{delivery: %{queued: 0}} = state), do: check_load(state)

  defp drain(state) do
    {what, attempts} = Delivery.peek(state.delivery)

    if sendable?(state, Delivery.size_of(what)) do
      {_item, delivery} = Delivery.pop(state.delivery)

      state
      |> put_delivery(delivery)
      |> send_delivery(what, attempts)
      |> drain()
    else
      check_load(state)
    end
  end

  # Health with hysteresis: `overloaded` when the queue's length or its bytes reach their
  # high-water mark (:high_water, and 80% of :max_queue_bytes), `healthy` again once both
  # are below half of theirs.
  defp check_load(
         %{overloaded: false, delivery: %{queued: n, queued_bytes: b}, spec: spec} = state
       ) do
    if n >= spec.high_water or b >= high_water_bytes(spec) do
      publish_load(
        %{state | overloaded: true},
        "overloaded",
        "queue at #{n} of #{spec.max_queue}, #{Output.size(b)} of #{Output.size(spec.max_queue_bytes)}"
      )
    else
      state
    end
  end

  defp check_load(%{delivery: %{queued: n, queued_bytes: b}, spec: spec} = state) do
    hw = spec.high_water
    hwb = high_water_bytes(spec)

    if n < div(hw, 2) and b < div(hwb, 2) do
      publish_load(
        %{state | overloaded: false},
        "healthy",
        "queue back at #{n}, #{Output.size(b)} (high water #{hw}, #{Output.size(hwb)})"
      )
    else
      state
    end
  end

  defp high_water_bytes(spec), do: max(1, div(spec.max_queue_bytes * 4, 5))

  defp publish_load(state, kind, reason) do
    metrics = %{
      "queue" => state.delivery.queued,
      "queue_bytes" => state.delivery.queued_bytes,
      "in_flight" => state.delivery.in_flight,
      "max_queue" => state.spec.max_queue,
      "max_queue_bytes" => state.spec.max_queue_bytes,
      "dropped" => state.rare.dropped
    }

    level = if kind == "healthy", do: :info, else: :warning
    Logger.log(level, "agent #{state.id} is #{kind}: #{reason}", meta(state))

    if kind == "healthy",
      do: set_signal(state, :load, nil, reason),
      else: set_signal(state, :load, {kind, reason, metrics})
  end

  # Removes the delivery `seq` and those sent before it from the flight (Delivery.ack/2).
  defp take_inflight(state, seq) do
    {taken, delivery} = Delivery.ack(state.delivery, seq)
    {taken, %{state | delivery: delivery}}
  end

  # An agent that consumes the dead letters and fails on one would feed it back to itself
  # for ever: a dead letter that dies again is logged, and goes no further.
  defp dead_letter(state, %Symbiont.Event{topic: "symbiont.dead_letter"}, reason, _, error) do
    Logger.error(
      "agent #{state.id} gave up on a dead letter (#{reason}): #{inspect(error && error["message"])}; dropped",
      meta(state)
    )
  end

  defp dead_letter(state, what, reason, attempts, error) do
    {topic, payload} =
      case what do
        %Symbiont.Event{topic: t, payload: p} -> {t, %MsgPack.Bin{data: p}}
        {:tick, name, _seq} -> {"$tick", name}
      end

    letter = %{
      "agent" => state.name,
      "topic" => topic,
      "payload" => payload,
      "reason" => reason,
      "attempts" => attempts,
      "error" => error
    }

    with {:ok, event} <- Symbiont.Event.new("symbiont.dead_letter", letter, state.name),
         do: Symbiont.Mesh.broadcast(Symbiont.Mesh, event.topic, event)
  end

  defp describe(%Symbiont.Event{topic: t}), do: "an event on #{inspect(t)}"
  defp describe({:tick, name, _seq}), do: "timer #{inspect(name)}"

  ## Crashes and restarts (see "How it is doing" in Symbiont.Observation)

  # The death of its host's process is charged to this agent (host_down/2 decides, with
  # charged?/2): one crash more, one failure in its window when a delivery of its was
  # running, and that delivery charged.
  #
  # Which delivery killed the host? The host's flight recorder says which was running
  # (`running`, its seq; PROTOCOL.md §11.1): that one is charged an attempt (after
  # max_attempts, the dead letters: a poison message does not crash-loop its agent), and
  # the others go again uncharged, in order. `:none`: none was running. Without a
  # recorder (`nil`): acks are batched, so with several in flight the oldest unacked one
  # may well have been handled already. So: with one delivery in flight, it is the
  # culprit and is charged; with several, they all go back to the front of the queue
  # uncharged, and the agent is on probation: they go one at a time until each has been
  # acked, so that a crash meanwhile has exactly one suspect.
  defp charge_crash(state, crash, running) do
    {requeued, charged, delivery} =
      Delivery.crash(state.delivery, running, state.spec.max_attempts, fallback?(state))

    state = state |> put_delivery(delivery) |> requeued(requeued)

    case charged do
      nil -> state
      {flight, verdict} -> charge_running(state, flight, verdict, crash)
    end
  end

  # The delivery that was running when the host died: an attempt (Delivery.crash/4 has
  # put it back already when it goes again).
  defp charge_running(state, {_seq, what, _frame, attempts, _at}, verdict, crash) do
    error = %{
      "type" => "crash",
      "message" => "the host #{crash.message} while handling it",
      "traceback" => Enum.join(crash.logs, "\n")
    }

    reason = if Map.get(crash, :stalled) == state.id, do: "timeout", else: "crashed"
    state = rare(state, last_error: error)
    failed(state, what, attempts + 1, verdict, reason, error)
  end

  # The deliveries in flight go back to the front of the queue, in order, uncharged
  # (their bytes with them).
  defp requeue_inflight(state) do
    {requeued, delivery} = Delivery.requeue_inflight(state.delivery)
    state |> put_delivery(delivery) |> requeued(requeued)
  end

  # Deliveries taken back to be sent again: their spans end, and they are counted.
  defp requeued(state, []), do: state

  defp requeued(state, flights) do
    handled(state, flights, :requeued)
    rare(state, redelivered: state.rare.redelivered + length(flights))
  end

  # A restart on purpose (an upgrade, a promotion or rollback, a release, a restart by
  # hand or by the conductor): its failure window starts over, so that what it is judged
  # by is what it does from now on. (Every start after the first counts as a restart,
  # in agent_ready; only host_down/2 counts a crash.)
  # Its latency samples start over too (Symbiont.Signals), and its evidence is worked out
  # again at once.
  defp fresh_start(state, why) do
    {_n, last, busy} = state.sampling
    state = %{state | window: Window.new(), samples: [], sampling: {0, last, busy}}
    rate_signal(analytics(state, evidence_at: nil), why)
  end

  ## Health (see "How it is doing" in Symbiont.Observation)

  # One signal of its health, by source: :rate (its failure window), :load (its queue),
  # :start (a start that failed), :journal (a journal the disk refuses), :topics
  # (publishes refused over :max_topics), :reported (what the agent said itself since it
  # started). `signal` is {kind, reason, metrics}, or nil when the source has nothing
  # against it; `why` is the reason given when that makes it healthy again.
  #
  # `said` is the kind the agent itself just said (its own event is on symbiont.health
  # already): a health it makes is not said twice.
  defp set_signal(state, source, signal, why \\ nil, said \\ nil) do
    signals =
      if signal,
        do: Map.put(state.rare.signals, source, signal),
        else: Map.delete(state.rare.signals, source)

    if signals == state.rare.signals,
      do: state,
      else: state |> rare(signals: signals) |> refresh_health(why, said)
  end

  # Its health now: `quarantined` while it is, else the worst of its signals.
  defp health(%{quarantined: why} = state) when why != nil,
    do: {"quarantined", why, %{"queue" => state.delivery.queued}}

  defp health(state) do
    Enum.reduce(state.rare.signals, {"healthy", nil, %{}}, fn {_source, signal}, worst ->
      if @health_rank[elem(signal, 0)] < @health_rank[elem(worst, 0)], do: signal, else: worst
    end)
  end

  # A health event is published when its health changes kind (not when only the reason
  # does): on transitions, not once per failure. What the agent said itself (`said`) is
  # on symbiont.health already, as its own event: it is not said twice.
  defp refresh_health(state, why \\ nil, said \\ nil) do
    {kind, reason, metrics} = health(state)
    reason = if kind == "healthy", do: why || reason || "healthy", else: reason

    cond do
      kind != state.rare.health ->
        unless kind == said, do: announce(state, kind, reason, metrics)
        at = System.system_time(:millisecond)
        state |> rare(health: kind, health_reason: reason, health_at: at) |> observe()

      kind != "healthy" and reason != state.rare.health_reason ->
        state |> rare(health_reason: reason) |> observe()

      true ->
        state
    end
  end

  # A health event of the node's about this replica (`"by": "symbiont"`), stamped with
  # its id and version; its metrics have its `"id"`, and its `"role"` for a canary.
  defp announce(state, kind, reason, metrics) do
    metrics = Map.put(metrics, "id", state.id)

    metrics =
      if state.rare.role == :stable,
        do: metrics,
        else: Map.put(metrics, "role", "#{state.rare.role}")

    Symbiont.Health.publish(kind, state.name, reason, metrics,
      id: state.id,
      version: describe_logic(state.spec)
    )
  end

  # A delivery failed (a nack, or its host died while on it): the failure window says
  # whether that makes it degraded or failing.
  defp window_failed(state),
    do: rate_signal(%{state | window: Window.failed(state.window, now_ms())})

  # The health its failure window gives (Symbiont.Health.Window); while that is not
  # healthy, a :window_check forgets the failures once they are old. `why` says why it is
  # healthy again, when that is not because its deliveries succeed again.
  defp rate_signal(state, why \\ nil) do
    prev = with %{rate: {kind, _, _}} <- state.rare.signals, do: kind, else: (_ -> "healthy")
    kind = Window.kind(state.window, prev)
    {n, failed} = Window.counts(state.window)

    state =
      if kind == "healthy" do
        why = why || "its deliveries succeed again (#{Window.reason(state.window)})"
        set_signal(state, :rate, nil, why)
      else
        if kind != prev do
          Logger.warning(
            "agent #{state.id} is #{kind}: #{Window.reason(state.window)}",
            meta(state)
          )
        end

        metrics = %{"deliveries" => n, "failed" => failed}
        set_signal(state, :rate, {kind, Window.reason(state.window), metrics})
      end

    case Window.expires_in(state.window, now_ms()) do
      ms when is_integer(ms) and kind != "healthy" and not state.rare.window_check ->
        Process.send_after(self(), :window_check, ms)
        rare(state, window_check: true)

      _ ->
        state
    end
  end

  ## Its row in Symbiont.Observation

  # Its slow fields, written when one of them changes.
  defp observe(%{rare: %{obs: nil}} = state), do: state

  defp observe(state) do
    state = evidence(state)
    Observation.put(state.id, observable(state))
    rare(state, observed_at: now_ms())
  end

  # Its latency and failure evidence (Symbiont.Signals), worked out again at most every
  # Signals.compute_ms() (a row may be written at every ack).
  defp evidence(state) do
    now = now_ms()

    a = state.rare.analytics

    if a.evidence_at != nil and now - a.evidence_at < Signals.compute_ms() do
      state
    else
      {h0, f0} = a.version_base

      {evidence, learned_at} =
        Signals.replica(%{
          name: state.name,
          version: describe_logic(state.spec),
          prev_version: a.prev_version,
          samples: state.samples,
          window: Window.counts(state.window),
          totals: {state.handled - h0, state.failed - f0},
          learned_at: a.learned_at,
          now: now
        })

      analytics(state, evidence: evidence, evidence_at: now, learned_at: learned_at)
    end
  end

  defp signals(%{rare: %{analytics: %{evidence: {nil, nil}, crash_log: [], up_since: nil}}}),
    do: nil

  defp signals(%{rare: %{analytics: %{evidence: {latency, failures}} = a}}),
    do: %{latency: latency, failures: failures, crashes: a.crash_log, up_since: a.up_since}

  # Its counters, after every message it handled (reply/1).
  defp count(%{rare: %{obs: nil}}), do: :ok

  defp count(state) do
    Observation.put_counters(
      state.rare.obs,
      state.delivery.queued,
      state.delivery.queued_bytes,
      state.delivery.in_flight,
      state.handled,
      state.failed,
      state.active_at,
      elem(state.sampling, 2)
    )
  end

  defp observable(state) do
    %{deliveries: n, failed: failed} = window = window_view(state.window)
    %{p99: p99} = percentiles(state.samples)

    %{
      name: state.name,
      role: state.rare.role,
      host: state.host,
      status: state.status,
      quarantined: state.quarantined,
      health: state.rare.health,
      health_reason: state.rare.health_reason,
      health_at_ms: state.rare.health_at,
      version: describe_logic(state.spec),
      max_queue: state.spec.max_queue,
      max_queue_bytes: state.spec.max_queue_bytes,
      high_water: state.spec.high_water,
      topics: state.rare.topics,
      crashes: state.rare.crashes,
      restarts: max(state.rare.starts - 1, 0),
      start_failures: state.rare.failures,
      window: window,
      failure_rate: Observation.rate(failed, n),
      suspect: suspect(state),
      last_error: error_message(state.rare.last_error),
      journal_error: journal_error(state.journal),
      signals: signals(state),
      p99_us: p99
    }
  end

  defp window_view(window) do
    {n, failed} = Window.counts(window)
    %{deliveries: n, failed: failed}
  end

  defp error_message(%{"message" => message}), do: message
  defp error_message(nil), do: nil
  defp error_message(other), do: inspect(other)

  defp journal_error(nil), do: nil

  defp journal_error(journal) do
    case Journal.error(journal) do
      nil -> nil
      error -> Journal.format_error(error)
    end
  end

  defp meta(state), do: [host: state.host, agent: state.id]

  # Updates fields of `state.rare` (see init/1); like `%{map | k: v}`, only existing ones.
  defp rare(state, fields) do
    %{state | rare: Enum.reduce(fields, state.rare, fn {k, v}, rare -> %{rare | k => v} end)}
  end

  # The same for its analytics' fields (Symbiont.Signals).
  defp analytics(state, fields) do
    a = Enum.reduce(fields, state.rare.analytics, fn {k, v}, a -> %{a | k => v} end)
    %{state | rare: %{state.rare | analytics: a}}
  end

  defp describe_logic(%{wasm: wasm}) when is_binary(wasm),
    do: "wasm:" <> Path.relative_to_cwd(wasm)

  defp describe_logic(spec), do: "#{spec.module}:#{spec.class}"

  defp format_remote_error(error), do: "#{error["type"]}: #{error["message"]}"

  ## Introspection

  # The first delivery that has failed before, in flight or waiting: %{topic, attempts}.
  defp suspect(state), do: Delivery.suspect(state.delivery, @suspect_scan)

  # p50 and p99 of the last 100 handling latencies.
  defp percentiles(samples) do
    latencies = samples |> Enum.take(100) |> Enum.map(&elem(&1, 1))
    %{p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99), n: length(latencies)}
  end

  @doc """
  The `q`-quantile (`0 < q <= 1`) of `values` by nearest rank, `nil` for none: what the
  latencies of `info/1` and the comparisons of `Symbiont.Deploy` mean by p50 and p99.

      iex> Symbiont.Agent.Server.percentile(Enum.to_list(1..100), 0.99)
      99
      iex> Symbiont.Agent.Server.percentile([], 0.5)
      nil
  """
  @spec percentile([number], float) :: number | nil
  defdelegate percentile(values, q), to: Symbiont.Stats

  defp public_info(state) do
    %{
      name: state.name,
      id: state.id,
      pid: self(),
      host: state.host,
      status: state.status,
      python: describe_logic(state.spec),
      spec: state.spec,
      topics: state.rare.topics,
      timers: Enum.map(state.rare.timers, & &1["name"]),
      in_flight: state.delivery.in_flight,
      in_flight_bytes: state.delivery.inflight_bytes,
      queue: state.delivery.queued,
      max_queue: state.spec.max_queue,
      queue_bytes: state.delivery.queued_bytes,
      max_queue_bytes: state.spec.max_queue_bytes,
      overloaded: state.overloaded,
      dropped: state.rare.dropped,
      redelivered: state.rare.redelivered,
      handled: state.handled,
      failed: state.failed,
      published: state.rare.published,
      refused_publishes: state.rare.refused_publishes,
      duplicates: Dedupe.dropped(state.dedupe),
      restarts: max(state.rare.starts - 1, 0),
      crashes: state.rare.crashes,
      start_failures: state.rare.failures,
      role: state.rare.role,
      window: window_view(state.window),
      last_error: state.rare.last_error,
      health: state.rare.health,
      health_reason: state.rare.health_reason,
      quarantined: state.quarantined,
      suspect: suspect(state),
      idle_ms: System.monotonic_time(:millisecond) - state.active_at,
      latency_us: percentiles(state.samples),
      journal:
        state.journal &&
          Map.merge(Journal.info(state.journal), %{
            held: length(state.rare.held),
            refused: state.rare.refused
          }),
      state: decode_state(state.state_bin, state.spec)
    }
  end

  # The checkpoint, decoded: a Wasm agent's is `{"wasm_state" => bytes}` (the msgpack its
  # module's symbiont_state wrote, WASM_ABI.md §4), whose value is its state.
  defp decode_state(nil, _spec), do: nil

  defp decode_state(bin, spec) do
    case MsgPack.decode(bin) do
      {:ok, %{"wasm_state" => inner} = outer} when is_binary(inner) ->
        if Map.get(spec, :wasm) do
          case MsgPack.decode(inner) do
            {:ok, value} -> value
            {:error, _} -> outer
          end
        else
          outer
        end

      {:ok, value} ->
        value

      {:error, _} ->
        nil
    end
  end
end

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

  ## Where its parts live

  This module is the process: its public functions, its callbacks, and which part each
  message goes to. The at-least-once rules (queue, credit window, overflow, retries,
  seqs, probation) are a pure data structure, `Symbiont.Agent.Delivery`; the rest is in
  `Symbiont.Agent.Server.*`, one concern each: `State` (the state map), `Deliveries`
  (carrying out what the delivery decides), `Link` (its host, crashes, quarantine),
  `Frames` (the frames of its slot, publishes and their credit), `Durable` (its journal),
  `Lifecycle` (upgrade, move, retirement), `Health` (its signals and health events) and
  `Introspection` (its row in `Symbiont.Observation`, and `info/1`).

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

  import Symbiont.Agent.Server.State

  alias Symbiont.{Journal, Observation}
  alias Symbiont.Agent.Dedupe

  alias Symbiont.Agent.Server.{
    Deliveries,
    Durable,
    Frames,
    Health,
    Introspection,
    Lifecycle,
    Link,
    State
  }

  alias Symbiont.Host.Out

  @registry Symbiont.Agent.Registry
  # An agent idle this long hibernates: its heap is compacted to what its state needs
  # (some 4 KB, where the heap it grew to while starting is 8), for the next message to
  # wake it (microseconds, beside the host's round trip).
  @hibernate_after_ms 1_000

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
        {:error, error} -> raise ArgumentError, Exception.message(error)
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
      name: via(id, {spec.name, role, host}),
      hibernate_after: @hibernate_after_ms
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
  moves a Wasm replica to a host of its own this way. A `Symbiont.Error` for a
  quarantined agent (`:refused`), or one upgrading, moving or retiring (`:unavailable`:
  try again later); `{:error, {:no_agent, ...}}` for an agent that does not run.
  """
  @spec move(String.t() | pid, String.t(), timeout) :: :ok | {:error, Symbiont.Error.t() | term}
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
    state = State.new(id, host, spec, extra)

    # A placed agent (spec :nodes) runs once in the cluster: :global refuses a second
    # copy before it touches its journal (see Symbiont.Manifest, "Placement").
    # A journal that cannot be opened keeps it from attaching (it has no state to start
    # from) but not from running: it says why, and tries again (see Durable.retry_journal/1).
    if placed_here?(id, spec) do
      state = set(state, :observed, row: Observation.open(id, Introspection.observable(state)))

      case Durable.open_journal(state) do
        {:ok, state} ->
          {:ok, state, {:continue, :attach}}

        {:error, reason, state} ->
          {:ok, Durable.journal_failed(state, reason), {:continue, :attach}}
      end
    else
      :ignore
    end
  end

  @impl true
  def handle_continue(:attach, %{quarantined: nil} = state),
    do: reply({:noreply, Link.attach(state)})

  # Started quarantined (the manifest's check at node start): its health says so.
  def handle_continue(:attach, state), do: reply({:noreply, Health.refresh_health(state)})

  @impl true
  # Every callback ends in reply/1 (the journal, then Out.reply/1): one that did not would
  # cancel the timeout that flushes the frames still waiting, and they would wait for the
  # next message.
  # The journal is committed first, so that what info says was accepted is on disk.
  def handle_call(:info, _from, state) do
    state = Durable.commit(state)
    reply({:reply, {:ok, Introspection.public_info(state)}, state})
  end

  def handle_call(:metrics, _from, state) do
    metrics = %{
      handled: state.handled,
      failed: state.failed,
      duplicates: Dedupe.dropped(state.dedupe),
      samples: state.samples,
      state_bin: state.state_bin
    }

    reply({:reply, {:ok, metrics}, state})
  end

  def handle_call({:upgrade, spec}, from, state) do
    case Symbiont.Agent.validate_spec(spec) do
      {:ok, spec} ->
        reply({:noreply, Lifecycle.settle(set(state, :lifecycle, upgrading: {from, spec}))})

      {:error, message} ->
        reply({:reply, {:error, message}, state})
    end
  end

  def handle_call({:move, host}, _from, %{host: host} = state), do: reply({:reply, :ok, state})

  def handle_call({:move, host}, from, state) do
    case Lifecycle.move(state, from, host) do
      {:ok, state} -> reply({:noreply, state})
      {:error, message} -> reply({:reply, {:error, message}, state})
    end
  end

  def handle_call({:quarantine, _reason}, _from, %{quarantined: q} = state) when q != nil,
    do: reply({:reply, :ok, state})

  def handle_call({:quarantine, reason}, _from, state) do
    Logger.warning("agent #{state.id} quarantined: #{reason}", meta(state))
    reply({:reply, :ok, Link.quarantine_now(state, reason)})
  end

  def handle_call(:release, _from, %{quarantined: nil} = state),
    do: reply({:reply, :ok, state})

  def handle_call(:release, _from, state), do: reply({:reply, :ok, Link.release(state)})

  def handle_call({:drop_suspect, why}, _from, state) do
    {result, state} = Deliveries.drop_suspect(state, why)
    reply({:reply, result, state})
  end

  def handle_call({:retire, heir}, from, state) do
    for topic <- state.mesh.topics, do: Symbiont.Mesh.unsubscribe(Symbiont.Mesh, topic)
    reply_noreply_or_stop(Lifecycle.settle(set(state, :lifecycle, retiring: {from, heir})))
  end

  @impl true
  def handle_info(:timeout, state) do
    state = Durable.commit(state)
    {:noreply, %{state | out: Out.flush(state.out)}}
  end

  def handle_info(msg, state) do
    case info(msg, state) do
      {:stop, state} -> reply_noreply_or_stop({:stop, state})
      state -> reply_noreply_or_stop(Lifecycle.settle(state))
    end
  end

  defp reply_noreply_or_stop({:stop, state}) do
    state = Durable.commit(state)
    Out.flush(state.out)
    Introspection.count(state)
    {:stop, :normal, state}
  end

  defp reply_noreply_or_stop(state), do: reply({:noreply, state})

  @impl true
  def terminate(_reason, state) do
    if state.journal, do: state |> Durable.commit() |> Map.fetch!(:journal) |> Journal.close()
    Out.flush(state.out)
    Observation.close(state.id, state.name, state.observed.role)
    :ok
  end

  # An event from the mesh (Deliveries.intake/2: accepted, held or refused).
  defp info(%Symbiont.Event{} = event, state), do: Deliveries.intake(state, event)

  defp info({:agent_frame, host, frame}, %{host_pid: host} = state),
    do: Frames.frame(frame, state)

  # A quarantined agent left its slot, and its deliveries went back to its queue: the host
  # may not have heard it before it restarted, or died of the delivery that was running
  # as it left (that crash came before its quarantine, and counts for nothing after it).
  defp info({:host_up, _host, _port}, %{quarantined: q} = state) when q != nil, do: state

  defp info({:host_down, _host, _crash}, %{quarantined: q, slot: nil} = state) when q != nil,
    do: state

  defp info({:host_up, host, port}, %{host_pid: host} = state), do: Link.start_on(state, port)

  defp info({:host_down, host, crash}, %{host_pid: host} = state),
    do: Link.host_down(state, crash)

  defp info({:DOWN, ref, :process, _, reason}, %{link: %{host_ref: ref}} = state),
    do: Link.owner_down(state, reason)

  defp info(:attach, %{host_pid: nil, quarantined: nil} = state), do: Link.attach(state)

  defp info(:retired, %{lifecycle: %{retiring: {from, _heir}}} = state),
    do: {:stop, Lifecycle.retired(state, from)}

  defp info({:retry_start, port, n}, %{out: %{port: port}, link: %{failures: n}} = state),
    do: Link.start_on(state, port)

  defp info(:stall_check, state), do: Link.stall_check(%{state | stall_check: false})

  defp info(:window_check, state), do: Health.window_check(state)

  defp info({:journal_retry, n}, %{intake: %{journal_retry: n}} = state),
    do: Durable.retry_journal(state)

  defp info(:give_back, %{credit: {port, slot, frames, bytes, topics, true}} = state),
    do: Frames.give_back(%{state | credit: {port, slot, frames, bytes, topics, false}}, :checked)

  defp info(:give_back, state), do: state

  defp info({:tick, name}, state), do: Deliveries.tick(state, name)

  defp info(msg, state) do
    Logger.debug("agent #{state.id} ignored #{inspect(msg, limit: 5)}", meta(state))
    state
  end

  defp reply(result) do
    state = Durable.maybe_commit(elem(result, tuple_size(result) - 1))
    Introspection.count(state)
    Out.reply(put_elem(result, tuple_size(result) - 1, state))
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
end

defmodule Symbiont.Agent.Server.State do
  @moduledoc """
  The state of one `Symbiont.Agent.Server`: the map it builds when it starts (each field
  and what it is for), and the few accessors every part of the server uses (`set/3`,
  `meta/1`).
  """

  alias Symbiont.Agent.{Dedupe, Delivery}
  alias Symbiont.Health.Window
  alias Symbiont.Host.Out

  @typedoc "The state map of an agent server (its fields: `new/4`)."
  @type t :: map

  @doc false
  @spec new(String.t(), String.t(), map, map) :: t
  def new(id, host, spec, extra) do
    # The fields the server reads and writes on every event, ack or delivery at the top;
    # those that change seldom in a small map each, by concern (link, mesh, observed,
    # lifecycle, intake, analytics). A map of more than 32 keys is a hash trie, and each
    # update of one costs several times that of a flat map (a third of the server's time
    # per event went to that; bench/RESULTS.md, "Profiling"). Keep every map here at 32
    # keys or fewer (a test checks).
    %{
      id: id,
      name: spec.name,
      spec: spec,
      # What it runs, as its views and events name it (describe_logic/1 of its spec, once:
      # it reads the working directory).
      version: describe_logic(spec),
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
      # (µs)}: see Frames.work/3.
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
      # Its link to its host's process (Symbiont.Agent.Server.Link).
      link: %{
        host_ref: nil,
        # The largest frame the host's process accepts.
        max_frame: nil,
        starts: 0,
        failures: 0,
        # Deaths of its host charged to it (Link.host_down/2: Symbiont.Host.Blame, else
        # Link.charged?/2). A host that died while another agent's code ran, or restarted on
        # purpose, restarts it without a crash.
        crashes: 0,
        last_error: nil
      },
      # Its place in the mesh (Symbiont.Agent.Server.Frames): what it subscribed to, and
      # what it published.
      mesh: %{
        topics: [],
        timers: [],
        subscribed: false,
        published: 0,
        # The topics the agent published on since its process started, each a copy of
        # its own (topic => the same binary; see own_topic/2), and its publishes refused
        # for :max_topics (whether that was told since the start, and how many in all).
        pub_topics: %{},
        topics_told: false,
        # Whether a publish on a topic of the BEAM's was logged since the start.
        reserved_told: false,
        refused_publishes: 0
      },
      # How it is seen (Symbiont.Agent.Server.Health and Introspection).
      observed: %{
        # Its counters in Symbiont.Observation (written after every message: reply/1 of
        # the server), nil until its row is open.
        row: nil,
        # Its role (:stable, :canary).
        role: Map.get(extra, :role, :stable),
        # Its health (Symbiont.Observation): the worst of its signals, each
        # {kind, reason, metrics} by source (see Health.set_signal/5), or "quarantined"
        # while it is; the reason; when it last changed (system ms).
        signals: %{},
        health: "healthy",
        health_reason: nil,
        health_at: System.system_time(:millisecond),
        # When its row was last written (monotonic ms), and whether a :window_check is on
        # its way (the failures of its window expire).
        observed_at: 0,
        window_check: false
      },
      # Upgrade, move and retirement (Symbiont.Agent.Server.Lifecycle).
      lifecycle: %{
        # {from, spec} while waiting for the deliveries in flight to finish (upgrade/3).
        upgrading: nil,
        # {from, host} while waiting for the deliveries in flight to finish (move/3).
        moving: nil,
        # {from, heir} while retiring (retire/3).
        retiring: nil,
        lingering: false
      },
      # What comes in besides what its handler takes (Symbiont.Agent.Server.Deliveries
      # and Durable).
      intake: %{
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
        fallback: extra.fallback,
        # Tells this server's seqs from those of an earlier one with the same id (a
        # durable agent keeps its incarnation in its journal, with its seqs).
        incarnation: System.os_time(:microsecond),
        # While a durable agent's journal cannot be written: the events it had taken
        # whose journal record did not reach the disk, {event, attempts} in the order
        # accepted. They wait here, never sent to the host, until the journal is written
        # again (see Durable.journal_failed/2).
        held: [],
        # Events refused because the journal could not be written.
        refused: 0,
        # The number of the journal retry that is due (a :journal_retry timer).
        journal_retry: 0
      },
      # Its signals for the analytics (Symbiont.Signals): the version it ran before
      # (whose baseline a new version is compared with), {handled, failed} when its
      # version started, its last crashes ([{at_ms, uptime_ms, seq}], newest first), since
      # when its process serves it (monotonic and system ms, or nil), when it last learnt
      # a baseline and worked out its evidence (monotonic ms), and that evidence.
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
      }
    }
  end

  @doc false
  @spec now_ms() :: integer
  def now_ms, do: System.monotonic_time(:millisecond)

  @doc false
  @spec meta(t) :: keyword
  def meta(state), do: [host: state.host, agent: state.id]

  @typedoc "A map of the state's fields that change seldom, by concern (see new/4)."
  @type group :: :link | :mesh | :observed | :lifecycle | :intake | :analytics

  # Updates fields of one of those maps; like `%{map | k: v}`, only existing ones.
  @doc false
  @spec set(t, group, keyword) :: t
  def set(state, group, fields) do
    %{
      state
      | group => Enum.reduce(fields, Map.fetch!(state, group), fn {k, v}, m -> %{m | k => v} end)
    }
  end

  @doc false
  @spec describe_logic(map) :: String.t()
  def describe_logic(%{wasm: wasm}) when is_binary(wasm),
    do: "wasm:" <> Path.relative_to_cwd(wasm)

  def describe_logic(spec), do: "#{spec.module}:#{spec.class}"

  @doc false
  @spec format_remote_error(map) :: String.t()
  def format_remote_error(error), do: "#{error["type"]}: #{error["message"]}"
end

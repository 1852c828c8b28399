defmodule Symbiont.Conductor.Observe do
  @moduledoc false
  # What the conductor sees each tick: the snapshot its policy gets (the agents of its
  # scope as Symbiont.Observation has them, each summarized with what changed since the
  # last tick; the topology; the templates; the health events and remediations since),
  # and the baseline the next tick counts from. It runs in the conductor's process and
  # reads the conductor's state (`observe/2`); the decisions are the conductor's.
  #
  # Many agents (the conductor's :observe_halves_from) are summarized in two halves at
  # once, split by name (the second in a process of its own, whose summaries are then
  # copied back): on two cores, 10,000 agents in less time (bench/heal.exs, "conductor
  # snapshot"). Both halves read the same input, so the snapshot is the one a single pass
  # builds (test/symbiont/conductor/observe_test.exs).

  alias Symbiont.{Observation, Signals}

  # What observing one replica builds, in words: its row, its view, its agent, its
  # summary and signals (some 550 for an idle Wasm agent).
  @observe_words 600

  @doc false
  # The snapshot, and the state with what the next tick counts from. A tick (`tick?`) also
  # reads the hosts' memory when it is due. Timed: the [:symbiont, :conductor, :observe]
  # event (bench/heal.exs reads it).
  @spec observe(map, boolean) :: {map, map}
  def observe(state, tick?) do
    started = System.monotonic_time(:microsecond)
    count = Observation.count()

    {snapshot, state} =
      with_heap(@observe_words * count, fn -> observe_now(state, tick?, count) end)

    Symbiont.Telemetry.execute(
      [:symbiont, :conductor, :observe],
      %{
        duration_us: System.monotonic_time(:microsecond) - started,
        agents: length(snapshot["agents"])
      },
      %{conductor: Map.get(state.opts, :name, Symbiont.Conductor)}
    )

    {snapshot, state}
  end

  @doc false
  # What the agents in `scope` have counted so far (the first tick's deltas count from
  # here), and where to split them in halves (middle/1).
  @spec baseline((String.t() -> boolean) | nil) :: {map, String.t() | nil}
  def baseline(scope) do
    views = Observation.agents(scope: scope)
    {Map.new(views, &{&1.name, previous(&1.replicas)}), middle(views, & &1.name)}
  end

  # The name halfway through `agents` (sorted by name), or nil for none: where the next
  # observation splits them (the agents change little from one tick to the next; halves
  # split at a name that left are still right, and only less even).
  defp middle([], _name), do: nil
  defp middle(agents, name), do: agents |> Enum.at(div(length(agents), 2)) |> name.()

  # Runs `fun` with a heap sized for `words` at once. What an observation builds stays
  # live until the snapshot is made: a heap left to grow would copy all of it again at
  # each step (a third of the time of a snapshot of 10,000 agents; bench/heal.exs). The
  # heap shrinks back at the first collection after.
  defp with_heap(words, fun) when words < 100_000, do: fun.()

  defp with_heap(words, fun) do
    old = Process.flag(:min_heap_size, words)
    :erlang.garbage_collect()

    try do
      fun.()
    after
      Process.flag(:min_heap_size, old)
    end
  end

  defp observe_now(state, tick?, count) do
    scope = state.opts.scope
    now = System.system_time(:millisecond)
    mono = System.monotonic_time(:millisecond)
    state = if tick?, do: read_memory(state, scope), else: state

    memory =
      Map.new(state.memory, fn {host, {_pid, readings}} -> {host, Signals.memory(readings)} end)

    # Each host's CPU share of its busy time, over the usage window (5 heartbeats).
    cpu =
      Map.new(state.cpu, fn {host, {_pid, readings}} ->
        recent = Enum.take_while(readings, fn {at, _} -> at >= now - 5_000 end)
        {host, Signals.cpu_share(recent, Symbiont.Host.Usage.utilisation(host))}
      end)

    ctx = %{
      now: now,
      dt_ms: mono - state.prev_at,
      memory: memory,
      cpu: cpu,
      crash_window_ms: Signals.config()[:crash_window_ms]
    }

    # What every half reads: nothing of the conductor's state but this.
    input = %{
      ctx: ctx,
      prev: state.prev,
      remedied: state.remedied,
      ladders: state.ladders,
      manifest: manifest(state.opts.manifest),
      deploys: deploys(),
      publishers: publishers(scope)
    }

    halves =
      case count >= state.opts.observe_halves_from and state.middle do
        name when is_binary(name) ->
          both(
            fn -> half(input, scope: scope, below: name) end,
            fn -> half(input, scope: scope, from: name) end,
            div(@observe_words * count, 2)
          )

        _ ->
          [half(input, scope: scope)]
      end

    agents = Enum.flat_map(halves, & &1.agents)

    snapshot = %{
      "tick" => state.ticks + 1,
      "now_ms" => now,
      "node" => Atom.to_string(node()),
      "agents" => agents,
      "topology" => %{"edges" => Enum.flat_map(halves, & &1.edges), "topics" => topics()},
      # The shared hosts and their agents' shares of their time (Symbiont.Host.Usage).
      "hosts" => Symbiont.Host.Usage.snapshot(scope),
      "templates" => templates(),
      "health" => Enum.reverse(state.health),
      "remediations" => Symbiont.Conductor.Audit.entries_or_none(20, state.opts.audit)
    }

    # Each replica's counters, by pid: the next tick's deltas are counted per replica,
    # so that a replica retired or started meanwhile makes no negative or false change.
    prev = Enum.reduce(halves, %{}, &Map.merge(&2, &1.prev))
    middle = middle(agents, & &1["name"])
    {snapshot, %{state | prev: prev, prev_at: mono, middle: middle}}
  end

  # The agents of one half (`opts`: Symbiont.Observation.agents/1's), summarized; their
  # counters for the next tick; the edges of the topology into them.
  defp half(input, opts) do
    views = Observation.agents(opts)

    %{
      agents:
        Enum.map(views, &summarize(&1, input.manifest, Map.get(input.deploys, &1.name), input)),
      prev: Map.new(views, &{&1.name, previous(&1.replicas)}),
      edges: edges(views, input.publishers)
    }
  end

  # `first` here and `second` in a process of its own (its heap sized for `words`), at
  # once: their results, in that order. A crash of the second is this process's.
  defp both(first, second, words) do
    parent = self()
    tag = make_ref()

    {_pid, monitor} =
      :erlang.spawn_opt(fn -> send(parent, {tag, second.()}) end, [
        :monitor,
        # As the conductor's own (see "The loop" in Symbiont.Conductor).
        {:priority, :high},
        {:min_heap_size, words}
      ])

    mine = first.()

    receive do
      {^tag, theirs} ->
        Process.demonitor(monitor, [:flush])
        [mine, theirs]

      {:DOWN, ^monitor, :process, _, reason} ->
        exit({:observe_half, reason})
    end
  end

  # The resident set of each host of the agents in `scope`, every :memory_every_ms (one
  # small file read per host: Symbiont.Signals.rss/1); a host's readings start over with
  # each new process.
  defp read_memory(%{memory_at: at, opts: opts} = state, scope) do
    mono = System.monotonic_time(:millisecond)

    if at != nil and mono - at < opts.memory_every_ms do
      state
    else
      now = System.system_time(:millisecond)

      pids =
        for host <- Observation.hosts(scope: scope),
            os_pid = Symbiont.Host.os_pid(host),
            do: {host, os_pid}

      n = opts.memory_readings

      memory =
        for {host, os_pid} <- pids,
            rss = Signals.rss(os_pid),
            into: %{},
            do: {host, reading(state.memory, host, os_pid, {now, rss}, n)}

      cpu =
        for {host, os_pid} <- pids,
            used = Signals.cpu_us(os_pid),
            into: %{},
            do: {host, reading(state.cpu, host, os_pid, {now, used}, n)}

      %{state | memory: memory, cpu: cpu, memory_at: mono}
    end
  end

  # A host's readings with `new` first, at most `n`; they start over with a new process.
  defp reading(readings, host, os_pid, new, n) do
    case Map.get(readings, host) do
      {^os_pid, old} -> {os_pid, Enum.take([new | old], n)}
      _ -> {os_pid, [new]}
    end
  end

  # What the manifest says of each of its agents' replicas: `{min, max, required}`, by
  # name; the conductor works without a manifest too.
  defp manifest(server) do
    specs =
      try do
        Symbiont.Manifest.agents(server)
      catch
        :exit, _ -> []
      end

    Map.new(specs, fn s ->
      {s.name,
       {Map.get(s, :min_replicas, 1), Map.get(s, :max_replicas, 1), Map.get(s, :required, true)}}
    end)
  end

  # The edges between the agents observed: who published on a topic another one
  # subscribes to, from this node's counters and the agents' topics (no walk over every
  # subscription of the mesh: 10,000 agents cost nothing here). `publishers`: the
  # publishers of the scope that run here, by topic (publishers/1).
  defp edges(_views, publishers) when map_size(publishers) == 0, do: []

  defp edges(views, publishers) do
    for %{name: to, replicas: [first | _]} <- views,
        topic <- first.topics,
        from <- Map.get(publishers, topic, []),
        uniq: true,
        do: %{"from" => from, "topic" => topic, "to" => to}
  end

  # Who published on each topic, of the agents in `scope` that run here.
  defp publishers(scope) do
    for {p, topic, _n} <- Symbiont.Mesh.published(Symbiont.Mesh),
        scope == nil or scope.(p),
        Observation.runs?(p) do
      {topic, p}
    end
    |> Enum.group_by(&elem(&1, 0), &elem(&1, 1))
  rescue
    _ -> %{}
  end

  # When there are templates, the topics their `:match` patterns match (published to,
  # with how many subscribers, over the whole topology), for the policy's evolution rule.
  defp topics do
    template_topics()
  rescue
    _ -> []
  end

  defp counters(r),
    do: {r.handled, r.failed, r.crashes, r.restarts, r.busy_us, r.queue + r.in_flight}

  # Most agents run one replica: its pid and counters, without a map of one.
  defp previous([r]), do: %{pid: r.pid, counters: counters(r)}
  defp previous(replicas), do: Map.new(replicas, &{&1.pid, counters(&1)})

  defp summarize(view, manifest, deploy, input) do
    %{ctx: ctx, remedied: remedied, ladders: ladders} = input
    name = view.name
    now = ctx.now
    {min_replicas, max_replicas, required} = Map.get(manifest, name, {1, 1, true})
    prev = Map.get(input.prev, name)
    {handled, failed, crashes, restarts, busy} = deltas(view.replicas, prev)

    # A remedy by the operator (what pinned it: a quarantine, a release, a rollback, a
    # scale by hand) answers the evidence before it, as one of the conductor's does.
    remedied = remedied(view.pins, Map.get(remedied, name))
    deltas = {handled + failed, busy, view.queue + view.in_flight - backlog(prev)}
    signals = Signals.snapshot(view, ctx, deltas, remedied)

    # 32 keys at most: a flat map, built ten times faster than a larger one (10,000 a
    # tick; bench/heal.exs).
    %{
      "name" => name,
      "replicas" => length(view.replicas),
      "managed" => Map.has_key?(manifest, name),
      "min_replicas" => min_replicas,
      "max_replicas" => max_replicas,
      "required" => required,
      "version" => view.version,
      "queue" => view.queue,
      "in_flight" => view.in_flight,
      "handled" => view.handled,
      "failed" => view.failed,
      "crashes" => view.crashes,
      "restarts" => view.restarts,
      "handled_delta" => handled,
      "failed_delta" => failed,
      "crashes_delta" => crashes,
      "restarts_delta" => restarts,
      "failure_rate" => view.failure_rate,
      "idle_ms" => view.idle_ms,
      "quarantined" => view.quarantined != nil,
      "suspect" => suspect(view.suspect),
      "last_error" => view.last_error,
      "journal_error" => view.journal_error,
      # Failed starts in a row (its own start-failure rule retries, then quarantines it).
      "start_failures" => view.start_failures,
      "health" => view.health,
      "health_reason" => view.health_reason,
      "canary" => canary(view.canary),
      "pins" => pins(view.pins),
      # A promoted version it can roll back to, promoted this long ago, or nil (the
      # Python side adds "deployed", whether there is one: see the moduledoc).
      "promoted_ago_ms" => if(deploy, do: now - deploy, else: nil),
      "remedied_ago_ms" => if(remedied, do: now - remedied, else: nil),
      # What the BEAM measured (Symbiont.Signals; the Python side adds "p99_us" and
      # "high_water" from them), and the rung it is at on each ladder ("Escalation").
      "signals" => signals,
      "ladder" => ladder_view(Map.get(ladders, name), now)
    }
  end

  defp ladder_view(nil, _now), do: nil

  defp ladder_view(ladders, now),
    do: Map.new(ladders, fn {p, {rung, at}} -> {p, %{"rung" => rung, "ago_ms" => now - at}} end)

  defp backlog(nil), do: 0
  defp backlog(%{counters: c}), do: elem(c, 5)
  defp backlog(prev), do: prev |> Map.values() |> Enum.map(&elem(&1, 5)) |> Enum.sum()

  defp remedied(pins, at) when map_size(pins) == 0, do: at

  defp remedied(pins, at),
    do: pins |> Map.values() |> Enum.map(& &1.at_ms) |> Enum.concat(List.wrap(at)) |> Enum.max()

  # The change of each replica's counters since the last tick (or since the conductor
  # started: baseline/1): a replica, or an agent, new since then brings all of its own.
  defp deltas(replicas, nil), do: deltas(replicas, %{})

  defp deltas([%{pid: pid} = r], %{pid: pid, counters: {h0, f0, c0, s0, b0, _}}),
    do: {r.handled - h0, r.failed - f0, r.crashes - c0, r.restarts - s0, r.busy_us - b0}

  defp deltas(replicas, %{pid: pid, counters: counters}),
    do: deltas(replicas, %{pid => counters})

  defp deltas(replicas, prev) do
    Enum.reduce(replicas, {0, 0, 0, 0, 0}, fn r, {h, f, c, s, b} ->
      {h0, f0, c0, s0, b0, _} = Map.get(prev, r.pid, {0, 0, 0, 0, 0, 0})

      {h + r.handled - h0, f + r.failed - f0, c + r.crashes - c0, s + r.restarts - s0,
       b + r.busy_us - b0}
    end)
  end

  defp suspect(nil), do: nil
  defp suspect(s), do: %{"id" => s.id, "topic" => s.topic, "attempts" => s.attempts}

  defp canary(nil), do: nil

  defp canary(c) do
    %{
      "id" => c.id,
      "version" => c.version,
      "health" => c.health,
      "health_reason" => c.health_reason,
      "handled" => c.handled,
      "failed" => c.failed,
      "crashes" => c.crashes,
      "restarts" => c.restarts,
      "failure_rate" => c.failure_rate
    }
  end

  defp pins(pins) when map_size(pins) == 0, do: %{}
  defp pins(pins), do: Map.new(pins, fn {field, pin} -> {field, pin_map(pin)} end)

  defp pin_map(pin) do
    %{
      "value" => pin.value,
      "by" => pin.by,
      "reason" => pin.reason,
      "at_ms" => pin.at_ms,
      "until_ms" => pin.until_ms
    }
  end

  # Agents whose last deploy step is a promotion (one that can be rolled back), with the
  # time of that promotion (system ms).
  defp deploys do
    history =
      try do
        Symbiont.Deploy.history()
      catch
        :exit, _ -> []
      end

    history
    |> Enum.reverse()
    |> Enum.reduce(%{}, fn entry, acc ->
      case entry do
        %{action: :promote, agent: agent, at: at} ->
          Map.put(acc, agent, DateTime.to_unix(at, :millisecond))

        %{action: :rollback, agent: agent} ->
          Map.delete(acc, agent)

        _ ->
          acc
      end
    end)
  end

  defp template_topics do
    case for {_name, t} <- templates(), p = t["match"], do: p do
      [] ->
        []

      patterns ->
        for %{topic: topic, publishers: pubs, subscribers: subs} <- Symbiont.topology().topics,
            Enum.any?(patterns, &Symbiont.Conductor.Template.match(&1, topic)),
            do: %{
              "topic" => topic,
              "published" => pubs |> Enum.map(& &1.count) |> Enum.sum(),
              "subscribers" => length(subs)
            }
    end
  end

  # The templates the policy may spawn from, by name: `match` (a topic pattern) and the
  # Python class or Wasm module, without the rest of the spec.
  @doc false
  # The templates the policy may spawn from (see above).
  @spec templates() :: %{String.t() => map}
  def templates do
    for {name, spec} <- Symbiont.Config.get(:templates), into: %{} do
      {to_string(name),
       %{
         "match" => Keyword.get(spec, :match),
         "python" => Keyword.get(spec, :python),
         "wasm" => Keyword.get(spec, :wasm)
       }}
    end
  end
end

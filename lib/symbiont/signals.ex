defmodule Symbiont.Signals do
  @moduledoc """
  What the BEAM measures for the conductor's analytics (docs/ANALYTICS.md), beyond the
  counters of `Symbiont.Observation`: the BEAM measures, the Python policy decides.

  Per replica, each agent server works out as it writes its row (at most every
  #{100} ms while it handles events, and as its row changes otherwise):

    * **latency** - the evidence (`Symbiont.Stats.latency/3`) that its recent **handling
      times** are worse than its version's **baseline**. A handling time is what the
      handler took: from the delivery's send, or from the ack before it when it waited
      behind another delivery in the host, to its ack (a batch acked at once shares its
      time evenly); the queueing in front of the handler is left out, so that more
      load is not taken for a slower version. Recent: the handling times of the last
      `:window_ms`, at most `:recent` of them. The baseline is the version's own
      history: the older handling times, once there are `:baseline_min` of them, learnt
      again every `:baseline_every_ms` (per agent name and version, in a table of
      `Symbiont.Observation`, so that the replicas of a version and its later runs share
      it) but never while the recent ones say worse (p at most `:learn_alpha`): a
      regression is not learnt as the new normal. A version with no history of its own
      yet (just deployed, just promoted) is compared with the baseline of the version
      it replaced on that replica (`"own": false`), so the same rule watches a version
      from its first event; a version with neither has no evidence (`nil`).
    * **failures** - the evidence (`Symbiont.Stats.failures/4`) that the failures of its
      failure window (its last deliveries, `Symbiont.Health.Window`) are worse than its
      version's failure rate (given up over handled, when the baseline was learnt; 0 for
      a version with no baseline), against the same baselines.

  A restart on purpose (a release, an upgrade, a restart by hand or by the conductor)
  starts its samples over, as it does its failure window: evidence is counted from the
  remedy on. A crash does not.

  The conductor adds per tick (`Symbiont.Conductor`): the **crash** signal
  (`crashes/5`: the crashes charged to it within `:crash_window_ms` of *uptime*, so that
  a crash loop whose restart backoff has grown to seconds is still a loop), the **queue**
  rates (arrivals and departures per second, the mean handling time per event, the CPU
  time per event (`cpu_us/1`, `cpu_share/2`: the handling time at its host's CPU share
  of its busy time), and how busy the replica was), and the **memory** of the host
  process it runs in (`rss/1`: its resident set and how fast it grows,
  `Symbiont.Stats.slope/1`).

  ## Options

  `config :symbiont, signals: [...]`, read as each row is written (the defaults:
  `#{inspect(window_ms: 30_000, recent: 100, baseline_min: 100, baseline_every_ms: 30_000, learn_alpha: 0.01, ratio: 2.0, slack_us: 5_000, crash_window_ms: 60_000)}`;
  `:ratio` and `:slack_us` are the effect size of `Symbiont.Stats`). `validate/1` checks
  them as the application starts.
  """

  alias Symbiont.Stats

  @defaults [
    window_ms: 30_000,
    recent: 100,
    baseline_min: 100,
    baseline_every_ms: 30_000,
    learn_alpha: 0.01,
    ratio: 2.0,
    slack_us: 5_000,
    crash_window_ms: 60_000
  ]

  # At most this many older handling times make a baseline.
  @learn_from 500
  @compute_ms 100

  @typedoc "A crash charged to a replica: `{at_ms (system), uptime_ms, seq or nil}`."
  @type crash :: {integer, non_neg_integer, pos_integer | nil}

  @doc "The options in force (see the moduledoc)."
  @spec config() :: keyword
  def config, do: Keyword.merge(@defaults, Symbiont.Config.get(:signals))

  @doc "How often (ms) at most a replica works out its signals again while busy."
  @spec compute_ms() :: pos_integer
  def compute_ms, do: @compute_ms

  @doc """
  Checks `config :symbiont, signals: [...]`: `:ok`, or an `:invalid` `Symbiont.Error`
  naming the option, its value and what is allowed.

      iex> Symbiont.Signals.validate(window_ms: 5_000)
      :ok
      iex> {:error, error} = Symbiont.Signals.validate(window_ms: 0)
      iex> {error.reason, error.details}
      {:invalid, %{field: :window_ms, value: 0}}
      iex> error.message
      "expected signals option :window_ms to be a positive integer, got: 0"
  """
  @spec validate(term) :: :ok | {:error, Symbiont.Error.t()}
  def validate(opts), do: opts |> check_all() |> Symbiont.Error.wrap(:invalid, field: :signals)

  defp check_all(opts) when is_list(opts) do
    Enum.find_value(opts, :ok, fn
      {key, value} when is_atom(key) ->
        case check(key, value) do
          :ok -> nil
          error -> error
        end

      other ->
        {:error,
         "expected the signals config to be a keyword list, got the entry: #{inspect(other)}"}
    end)
  end

  defp check_all(other),
    do: {:error, "expected the signals config to be a keyword list, got: #{inspect(other)}"}

  @integers [:window_ms, :recent, :baseline_min, :baseline_every_ms, :crash_window_ms]

  defp check(key, v) when key in @integers,
    do: if(is_integer(v) and v > 0, do: :ok, else: bad(key, v, "a positive integer"))

  defp check(:ratio, v),
    do: if(is_number(v) and v >= 1, do: :ok, else: bad(:ratio, v, "a number >= 1"))

  defp check(:learn_alpha, v),
    do:
      if(is_number(v) and v > 0 and v < 1,
        do: :ok,
        else: bad(:learn_alpha, v, "a number between 0 and 1 (both excluded)")
      )

  defp check(:slack_us, v),
    do: if(is_integer(v) and v >= 0, do: :ok, else: bad(:slack_us, v, "a non-negative integer"))

  defp check(key, _v),
    do:
      {:error,
       "unknown signals option #{inspect(key)}; allowed: #{inspect(Keyword.keys(@defaults))}"}

  defp bad(key, v, what),
    do:
      {:error,
       Symbiont.Error.new(
         :invalid,
         "expected signals option #{inspect(key)} to be #{what}, got: #{inspect(v)}",
         field: key,
         value: v
       )}

  @doc false
  # A replica's latency and failure evidence, worked out as its server writes its row
  # (see the moduledoc), and when it last learnt a baseline (monotonic ms). `r` has:
  # name, version, prev_version (the version it ran before, or nil), samples
  # ([{acked_at_ms, latency_us, handling_us}], newest first), window ({deliveries,
  # failed}), totals ({handled, failed} of this version), learned_at (nil: never), now
  # (monotonic ms).
  @spec replica(map) :: {{map | nil, map | nil}, integer | nil}
  def replica(%{samples: [], window: {0, _}} = r), do: {{nil, nil}, r.learned_at}

  def replica(%{samples: samples, window: {n, failed}} = r) do
    cfg = config()
    since = r.now - cfg[:window_ms]
    {recent, older} = split(samples, since, cfg[:recent], [])
    {baseline, own} = baseline(r.name, r.version, r.prev_version)
    effect = [ratio: cfg[:ratio], slack_us: cfg[:slack_us]]
    latency = Stats.latency(recent, baseline, effect)

    learned_at =
      learn(
        r,
        older,
        latency,
        cfg,
        r.learned_at == nil or r.now - r.learned_at >= cfg[:baseline_every_ms]
      )

    rate = if baseline, do: Map.get(baseline, :rate, 0.0), else: 0.0
    failures = if baseline || failed > 0, do: Stats.failures(n, failed, rate), else: nil
    {{latency_map(latency, baseline, own, r), failure_map(failures, baseline, own)}, learned_at}
  end

  # The recent handling times (those acked since `since`, at most `max`), and the older
  # ones (at most @learn_from).
  defp split([{at, _, us} | rest], since, max, acc) when at >= since and max > 0,
    do: split(rest, since, max - 1, [us | acc])

  defp split(rest, _since, _max, acc),
    do: {acc, rest |> Enum.take(@learn_from) |> Enum.map(&elem(&1, 2))}

  defp baseline(name, version, prev) do
    case Symbiont.Observation.baseline(name, version) do
      nil when prev != nil -> {Symbiont.Observation.baseline(name, prev), false}
      own -> {own, true}
    end
  end

  defp learn(r, older, latency, cfg, due?) do
    if due? and length(older) >= cfg[:baseline_min] and
         not Stats.worse?(latency, cfg[:learn_alpha]) do
      {handled, failed} = r.totals
      rate = if handled + failed > 0, do: failed / (handled + failed), else: 0.0
      base = older |> Stats.baseline() |> Map.merge(%{rate: rate, version: r.version})
      Symbiont.Observation.put_baseline(r.name, r.version, base)
      r.now
    else
      r.learned_at
    end
  end

  defp latency_map(nil, _baseline, _own, _r), do: nil

  defp latency_map(e, baseline, own, _r) do
    %{
      "n" => e.n,
      "k" => e.k,
      "p" => e.p,
      "bar_us" => e.bar_us,
      "test" => Atom.to_string(e.test),
      "p50_us" => e.p50_us,
      "p99_us" => e.p99_us,
      "baseline" => baseline_map(baseline, own)
    }
  end

  defp failure_map(nil, _baseline, _own), do: nil

  defp failure_map(e, baseline, own) do
    %{
      "n" => e.n,
      "k" => e.k,
      "p" => e.p,
      "baseline_rate" => e.rate,
      "baseline" => baseline_map(baseline, own)
    }
  end

  defp baseline_map(nil, _own), do: nil

  defp baseline_map(b, own) do
    %{
      "n" => b.n,
      "p50_us" => b.p50_us,
      "p99_us" => b.p99_us,
      "version" => b.version,
      "own" => own
    }
  end

  @doc """
  The crash signal of a replica at `now` (system ms), from its `log` of crashes
  (`t:crash/0`, newest first) and `up_since` (system ms since when its current process
  serves it, or `nil`): the crashes after `after_ms` (its last remedy, or `nil`) within
  `window_ms` of uptime, counting back from now, as `%{"n", "deliveries" (how many
  different deliveries were running: a crash with none known counts as one of its own),
  "uptime_ms" (the uptime they span), "last_ago_ms"}`; `nil` for none.

      iex> log = [{9_000, 20, 7}, {6_000, 15, 6}, {1_000, 12, 5}]
      iex> Symbiont.Signals.crashes(log, nil, 10_000, nil, 60_000)
      %{"n" => 3, "deliveries" => 3, "uptime_ms" => 47, "last_ago_ms" => 1_000}
      iex> Symbiont.Signals.crashes(log, nil, 10_000, 5_000, 60_000)["n"]
      2
      iex> Symbiont.Signals.crashes(log, 9_500, 10_000, nil, 100)
      nil
  """
  @spec crashes([crash], integer | nil, integer, integer | nil, pos_integer) :: map | nil
  def crashes([], _up_since, _now, _after, _window), do: nil

  def crashes([{last, _, _} | _] = log, up_since, now, after_ms, window) do
    up = if up_since, do: max(now - up_since, 0), else: 0

    {n, seqs, unknown, uptime} =
      Enum.reduce_while(log, {0, MapSet.new(), 0, up}, fn {at, lived, seq}, {n, seqs, u, up} ->
        if up < window and (after_ms == nil or at > after_ms) do
          {seqs, u} = if seq, do: {MapSet.put(seqs, seq), u}, else: {seqs, u + 1}
          {:cont, {n + 1, seqs, u, up + lived}}
        else
          {:halt, {n, seqs, u, up}}
        end
      end)

    if n == 0,
      do: nil,
      else: %{
        "n" => n,
        "deliveries" => MapSet.size(seqs) + unknown,
        "uptime_ms" => uptime,
        "last_ago_ms" => now - last
      }
  end

  ## Memory

  @doc """
  The resident set of OS process `os_pid` in bytes (`/proc/<pid>/statm`), or `nil` when
  it cannot be read (no such process, no `/proc`).
  """
  @spec rss(non_neg_integer | nil) :: non_neg_integer | nil
  def rss(nil), do: nil

  def rss(os_pid) do
    case File.read("/proc/#{os_pid}/statm") do
      {:ok, text} ->
        case String.split(text, " ", parts: 3) do
          [_size, resident | _] -> String.to_integer(resident) * page_size()
          _ -> nil
        end

      {:error, _} ->
        nil
    end
  rescue
    ArgumentError -> nil
  end

  @doc """
  The CPU time OS process `os_pid` has used so far, user and system, in µs
  (`/proc/<pid>/stat`), or `nil` when it cannot be read.
  """
  @spec cpu_us(non_neg_integer | nil) :: non_neg_integer | nil
  def cpu_us(nil), do: nil

  def cpu_us(os_pid) do
    # After the command's name, which may hold anything, ") " included.
    with {:ok, text} <- File.read("/proc/#{os_pid}/stat"),
         rest = text |> String.split(") ") |> List.last(),
         [_state | fields] <- String.split(rest, " "),
         [utime, stime] <- Enum.slice(fields, 10, 2) do
      div((String.to_integer(utime) + String.to_integer(stime)) * 1_000_000, clock_ticks())
    else
      _ -> nil
    end
  rescue
    ArgumentError -> nil
  end

  @doc """
  How much of its busy time a host spends on the CPU, 0.0 to 1.0: its CPU time over
  `readings` (`[{at_ms, cpu_us}]`, newest first, one process) per wall-clock time, over
  `utilisation`, the share of that time its agents' handlers ran (`Symbiont.Host.Usage`).
  `nil` without two readings or a utilisation.

      iex> Symbiont.Signals.cpu_share([{2_000, 1_400_000}, {1_000, 1_000_000}], 0.8)
      0.5
      iex> Symbiont.Signals.cpu_share([{2_000, 1_400_000}], 0.8)
      nil
  """
  @spec cpu_share([{integer, non_neg_integer}], float | nil) :: float | nil
  def cpu_share([{last_at, last} | [_ | _] = older], utilisation)
      when is_number(utilisation) and utilisation > 0 do
    {first_at, first} = List.last(older)

    if last_at > first_at,
      do: min(1.0, round_to((last - first) / ((last_at - first_at) * 1000) / utilisation, 1000)),
      else: nil
  end

  def cpu_share(_readings, _utilisation), do: nil

  defp clock_ticks, do: getconf("CLK_TCK", 100)

  defp page_size, do: getconf("PAGESIZE", 4096)

  # A system constant (`getconf name`), asked once per node; `default` when it cannot be.
  defp getconf(name, default) do
    case :persistent_term.get({__MODULE__, name}, nil) do
      nil ->
        value =
          case System.cmd("getconf", [name], stderr_to_stdout: true) do
            {out, 0} -> out |> String.trim() |> String.to_integer()
            _ -> default
          end

        :persistent_term.put({__MODULE__, name}, value)
        value

      value ->
        value
    end
  rescue
    _ -> default
  end

  @doc """
  The memory signal of a host from its readings `[{at_ms, rss_bytes}]` (newest first, one
  process): `%{"rss_bytes" (the last), "growth_bps" (bytes per second, least squares),
  "r2" (how steady the growth is, 0 to 1), "grown_bytes" (last minus first),
  "readings", "span_ms"}`; `nil` for none.

      iex> Symbiont.Signals.memory([{2_000, 30_000_000}, {1_000, 20_000_000}, {0, 10_000_000}])
      %{"rss_bytes" => 30_000_000, "growth_bps" => 10_000_000, "r2" => 1.0,
        "grown_bytes" => 20_000_000, "readings" => 3, "span_ms" => 2_000}
  """
  @spec memory([{integer, non_neg_integer}]) :: map | nil
  def memory([]), do: nil

  def memory([{last_at, rss} | _] = readings) do
    {first_at, first} = List.last(readings)

    {growth, r2} =
      case Stats.slope(Enum.map(readings, fn {at, b} -> {at / 1000, b} end)) do
        nil -> {0, 0.0}
        {slope, r2} -> {round(slope), round_to(r2, 1000)}
      end

    %{
      "rss_bytes" => rss,
      "growth_bps" => growth,
      "r2" => r2,
      "grown_bytes" => rss - first,
      "readings" => length(readings),
      "span_ms" => last_at - first_at
    }
  end

  ## The conductor's snapshot

  @doc false
  # The "signals" of one agent in the conductor's snapshot (see Symbiont.Conductor): its
  # stable replicas' evidence (`view`, Symbiont.Observation.agents/1), with the deltas of
  # the tick (`deltas`: {departures, busy_us, backlog change}, over ctx.dt_ms), the
  # memory of each host (ctx.memory: host => memory/1), and since when its crashes count
  # (`after_ms`: its last remedy, or nil).
  @spec snapshot(map, map, {integer, integer, integer}, integer | nil) :: map
  def snapshot(%{replicas: [r]} = view, ctx, deltas, after_ms) do
    %{
      "p99_us" => view.p99_us,
      "latency" => latency_of(r),
      "failures" => failures_of(r),
      "crashes" => crashes_of(r, ctx, after_ms),
      "queue" => queue(view, deltas, ctx.dt_ms, host_cpu(view, ctx)),
      "memory" => Map.get(ctx.memory, r.host)
    }
  end

  def snapshot(%{replicas: replicas} = view, ctx, deltas, after_ms) do
    each =
      Enum.map(replicas, fn r ->
        %{
          "id" => r.id,
          "host" => r.host,
          "latency" => latency_of(r),
          "failures" => failures_of(r),
          "crashes" => crashes_of(r, ctx, after_ms),
          "memory" => Map.get(ctx.memory, r.host)
        }
      end)

    %{
      "p99_us" => view.p99_us,
      "latency" => strongest(each, "latency"),
      "failures" => strongest(each, "failures"),
      "crashes" => each |> Enum.map(& &1["crashes"]) |> Enum.reject(&is_nil/1) |> sum_crashes(),
      "queue" => queue(view, deltas, ctx.dt_ms, host_cpu(view, ctx)),
      "memory" =>
        Enum.max_by(each, &(get_in(&1, ["memory", "growth_bps"]) || -1)) |> Map.get("memory"),
      "replicas" => each
    }
  end

  defp latency_of(%{signals: %{latency: latency}}), do: latency
  defp latency_of(_r), do: nil
  defp failures_of(%{signals: %{failures: failures}}), do: failures
  defp failures_of(_r), do: nil

  defp crashes_of(%{signals: %{crashes: [_ | _] = log, up_since: up}}, ctx, after_ms),
    do: crashes(log, up, ctx.now, after_ms, ctx.crash_window_ms)

  defp crashes_of(_r, _ctx, _after_ms), do: nil

  # The replica whose evidence is the strongest (the least p).
  defp strongest(each, key) do
    each
    |> Enum.map(& &1[key])
    |> Enum.reject(&is_nil/1)
    |> Enum.min_by(& &1["p"], fn -> nil end)
  end

  defp sum_crashes([]), do: nil

  defp sum_crashes(all) do
    %{
      "n" => Enum.sum(Enum.map(all, & &1["n"])),
      "deliveries" => Enum.sum(Enum.map(all, & &1["deliveries"])),
      "uptime_ms" => Enum.sum(Enum.map(all, & &1["uptime_ms"])),
      "last_ago_ms" => all |> Enum.map(& &1["last_ago_ms"]) |> Enum.min()
    }
  end

  # Arrivals (departures plus the growth of what waits or is in flight) and departures
  # per second over the tick, the mean handling time of an event, and how busy the
  # replicas were (their handlers' time over the tick's, per replica: 1.0 is always busy).
  # The CPU share of the busy time of its replicas' hosts (ctx.cpu: host => cpu_share/2),
  # their mean; nil when none is known.
  defp host_cpu(%{replicas: [r]}, ctx), do: Map.get(ctx.cpu, r.host)

  defp host_cpu(%{replicas: replicas}, ctx) do
    case for(r <- replicas, s = Map.get(ctx.cpu, r.host), s != nil, do: s) do
      [] -> nil
      shares -> Enum.sum(shares) / length(shares)
    end
  end

  defp queue(view, {done, busy, backlog}, dt, cpu) when dt > 0 do
    replicas = length(view.replicas)
    service = if done > 0, do: div(busy, done), else: nil

    %{
      "high_water" => hd(view.replicas).high_water,
      "arrival_per_s" => round_to(max(done + backlog, 0) * 1000 / dt, 100),
      "departure_per_s" => round_to(done * 1000 / dt, 100),
      "service_us" => service,
      # CPU time per event: the handling time, at its host's CPU share of busy time.
      "cpu_us" => if(service && cpu, do: round(service * cpu), else: nil),
      "utilization" => round_to(busy / (dt * 1000 * replicas), 1000)
    }
  end

  defp queue(view, _deltas, _dt, _cpu) do
    %{
      "high_water" => hd(view.replicas).high_water,
      "arrival_per_s" => nil,
      "departure_per_s" => nil,
      "service_us" => nil,
      "cpu_us" => nil,
      "utilization" => nil
    }
  end

  # `x` rounded to 1/`scale` (Float.round/2 costs several µs a call: 10,000 agents a tick).
  defp round_to(x, scale), do: round(x * scale) / scale
end

# What every benchmark shares: the suite (which benchmarks `make bench` runs, in order),
# the rows and curves a benchmark records, and small helpers (median, percentiles,
# waiting). Each benchmark records its figures with `record/2` into
# bench/results/<name>.exs; bench/report.exs renders them all as one table in
# bench/RESULTS.md (see bench/README.md).
defmodule Bench.Results do
  @dir Path.expand("results", __DIR__)

  # The benchmarks of `make bench`, in the order they run and appear in the table. Adding
  # one is adding its name here (bench/<name>.exs calls record/2). The soak is not in it:
  # it runs 10 minutes on its own (`make bench BENCHES=soak`, see bench/README.md).
  @suite ~w(roundtrip mesh wasm component heal idle curves)

  @typedoc """
  One figure beside its baseline. `target` is a string such as `"≤ 1.2×"` (a bound on
  the ratio), `"< 256 KB"` or `"≥ 100k/s"` (a bound on the figure itself) or
  `"(info)"`; see `met/1`.
  """
  @type row :: %{
          measure: String.t(),
          value: number,
          baseline: String.t() | nil,
          base: number | nil,
          target: String.t()
        }

  @typedoc """
  A scaling curve: `points` are `{x, throughput, p99}`; `throughput` per second (the
  higher the better), `p99` in µs. `per` names the unit of work the throughput counts.
  """
  @type curve :: %{
          name: String.t(),
          title: String.t(),
          x: String.t(),
          throughput: String.t(),
          p99: String.t(),
          points: [{number, number, number}]
        }

  @doc "The benchmarks `make bench` runs, in order."
  @spec suite() :: [String.t()]
  def suite, do: @suite

  @doc "The directory of the recorded results."
  @spec dir() :: Path.t()
  def dir, do: @dir

  @doc "True when the run is the short one (`QUICK=1`)."
  @spec quick?() :: boolean
  def quick?, do: System.get_env("QUICK") in ["1", "true"]

  @doc """
  A row of the table: `measure` (with its unit in parentheses), the figure, the baseline
  and its figure measured in the same run, the target.

      iex> Bench.Results.row("call p50 (µs)", 40.0, "raw Port echo", 80.0, "≤ 1.2×").value
      40.0
  """
  @spec row(String.t(), number, String.t() | nil, number | nil, String.t()) :: row
  def row(measure, value, baseline, base, target)
      when is_binary(measure) and is_number(value) and is_binary(target) do
    %{measure: measure, value: value, baseline: baseline, base: base, target: target}
  end

  @doc """
  Records the rows of benchmark `bench` (and its curves, `curves:`, and detail lines,
  `details:`, markdown shown under the table) into bench/results/`bench`.exs, prints them,
  and renders bench/RESULTS.md with the latest results of every benchmark.
  """
  @spec record(String.t(), [row], keyword) :: :ok
  def record(bench, rows, opts \\ []) when is_binary(bench) and is_list(rows) do
    result = %{
      bench: bench,
      date: Date.utc_today(),
      quick: quick?(),
      seconds: elem(:erlang.statistics(:wall_clock), 0) / 1000,
      machine: Bench.Machine.facts(),
      rows: rows,
      curves: Keyword.get(opts, :curves, []),
      details: Keyword.get(opts, :details)
    }

    File.mkdir_p!(@dir)
    File.write!(path(bench), [Code.format_string!(inspect(result, limit: :infinity)), "\n"])
    if rows != [], do: IO.puts(Bench.Report.table(Enum.map(rows, &Map.put(&1, :bench, bench))))
    Bench.Report.render()
  end

  @doc """
  Before `record/2`: a benchmark's whole section as a markdown table, shown under the
  main table (its figures are not in it). Prefer `record/2`.
  """
  @spec write(String.t(), String.t()) :: :ok
  def write(section, table), do: record(section, [], details: table)

  @doc "The results recorded so far, by benchmark name."
  @spec read_all() :: %{String.t() => map}
  def read_all do
    for file <- Path.wildcard(Path.join(@dir, "*.exs")), into: %{} do
      {result, _} = Code.eval_file(file)
      {result.bench, result}
    end
  end

  defp path(bench), do: Path.join(@dir, "#{bench}.exs")

  @doc "The median of a list of numbers."
  @spec median([number]) :: number
  def median(xs), do: xs |> Enum.sort() |> Enum.at(div(length(xs), 2))

  @doc "Percentile `p` (0-100) of a sorted tuple of nanoseconds, in microseconds."
  @spec pct(tuple, number) :: float
  def pct(sorted, p),
    do: elem(sorted, min(tuple_size(sorted) - 1, trunc(tuple_size(sorted) * p / 100))) / 1000

  # How long wait/3 waits by default.
  @wait_ms 120_000

  @doc """
  Waits until `fun` returns true, checking every 5 ms; raises after two minutes (or at
  `deadline`, monotonic ms), with what `explain` returns then.
  """
  @spec wait((() -> boolean), integer, (() -> String.t())) :: :ok
  def wait(
        fun,
        deadline \\ System.monotonic_time(:millisecond) + @wait_ms,
        explain \\ fn -> "" end
      ) do
    cond do
      fun.() ->
        :ok

      System.monotonic_time(:millisecond) > deadline ->
        raise "bench: timed out waiting" <> explain.()

      true ->
        Process.sleep(5) && wait(fun, deadline, explain)
    end
  end

  @doc """
  Waits until the agent of each host `name` has handled exactly `n` events (`[{name,
  n}]`); on timeout the error gives each one's count, queue, deliveries in flight and
  restarts.
  """
  @spec await_handled([{String.t(), integer}]) :: :ok
  def await_handled(expected) do
    wait(
      fn -> Enum.all?(expected, fn {name, n} -> handled(name) == n end) end,
      System.monotonic_time(:millisecond) + @wait_ms,
      fn -> ": " <> Enum.map_join(expected, "; ", &describe_handled/1) end
    )
  end

  defp describe_handled({name, n}) do
    case Symbiont.Host.info(name) do
      {:ok, %{status: status, crashes: crashes, agent: agent}} when is_map(agent) ->
        "#{name} handled #{agent.handled} of #{n} (host #{status}, #{crashes} crashes; " <>
          "agent #{agent.status}, queue #{agent.queue}, in flight #{agent.in_flight}, " <>
          "restarts #{agent.restarts}, failed #{agent.failed}, dropped #{agent.dropped})"

      other ->
        "#{name}: #{inspect(other)}"
    end
  end

  @doc """
  Publishes `value` on `topic` as a checked publish (`Symbiont.publish/3`), trying again
  every millisecond while a subscriber's queue is full: a burst is paced by its consumers
  and none of it is lost to a full queue.
  """
  @spec publish_checked(String.t(), term) :: :ok
  def publish_checked(topic, value) do
    case Symbiont.publish(topic, value, checked: true) do
      :ok ->
        :ok

      {:error, :overloaded} ->
        Process.sleep(1)
        publish_checked(topic, value)
    end
  end

  @doc """
  Starts a host named `name` running one Python agent of the same name,
  `bench_agents:Sink` (it counts `bench.fanout`), that rejects events when its queue is
  full (checked publishes wait for room).
  """
  @spec start_sink(String.t()) :: :ok
  def start_sink(name) do
    {:ok, _} =
      Symbiont.Python.start(
        name: name,
        python_path: [__DIR__],
        agent: [name: name, python: "bench_agents:Sink", overflow: :reject]
      )

    :ok
  end

  @doc """
  How many events the agent of host `name` (a host of one agent) has handled; -1 until
  the host and its agent are ready (the agent has subscribed then).
  """
  @spec handled(String.t()) :: integer
  def handled(name) do
    case Symbiont.Host.info(name) do
      {:ok, %{status: :ready, agent: %{status: :ready, handled: n}}} -> n
      _ -> -1
    end
  end

  @doc "The \"met\" column of a boolean: \"yes\" or \"no\"."
  @spec met(boolean) :: String.t()
  def met(true), do: "yes"
  def met(false), do: "no"

  @doc """
  Whether a row meets its target: `true`, `false`, or `nil` for `"(info)"`. A target
  ending in `×` bounds the ratio to the baseline, any other the figure itself (`k` and
  `M` right after the number multiply by a thousand and a million, as in `"≥ 100k/s"`);
  the unit after the number is ignored.

      iex> Bench.Results.meets?(%{value: 40, base: 80, target: "≤ 1.2×"})
      true
      iex> Bench.Results.meets?(%{value: 90_000, base: 150_000, target: "≥ 100k/s"})
      false
      iex> Bench.Results.meets?(%{value: 12.5, base: 8.0, target: "< 20 MB"})
      true
  """
  @spec meets?(map) :: boolean | nil
  def meets?(%{target: target} = row) do
    case Regex.named_captures(
           ~r/^\s*(?<op>≤|<|≥|>)\s*(?<n>[\d.]+)(?<mult>[kM](?![[:alpha:]]))?\s*(?<x>×)?/u,
           target
         ) do
      nil ->
        nil

      %{"op" => op, "n" => n, "mult" => mult, "x" => x} ->
        {bound, ""} = Float.parse(n)
        bound = bound * %{"" => 1, "k" => 1_000, "M" => 1_000_000}[mult]
        value = if x == "×", do: ratio(row), else: row.value
        value != nil and compare(op, value, bound)
    end
  end

  defp compare("≤", x, bound), do: x <= bound
  defp compare("<", x, bound), do: x < bound
  defp compare("≥", x, bound), do: x >= bound
  defp compare(">", x, bound), do: x > bound

  @doc "The figure over its baseline, or `nil` without one."
  @spec ratio(map) :: float | nil
  def ratio(%{value: v, base: b}) when is_number(b) and b != 0, do: v / b
  def ratio(_row), do: nil

  @doc "The number in a target such as \"≤ 1.5×\"."
  @spec target_value(String.t()) :: float
  def target_value(target) do
    [_, n] = Regex.run(~r/([\d.]+)×/, target)
    {value, ""} = Float.parse(n)
    value
  end

  @doc "A figure for a table: integers as they are, whole numbers from 1000 up, one decimal below."
  @spec number(number) :: String.t()
  def number(x) when is_integer(x), do: Integer.to_string(x)
  def number(x) when x >= 1000, do: x |> round() |> Integer.to_string()
  def number(x), do: :erlang.float_to_binary(x / 1, decimals: 1)
end

defmodule Bench.Machine do
  @moduledoc false
  # The machine facts at the head of bench/RESULTS.md.

  @doc "Cores, CPU, memory and the versions of OTP, Elixir, Python and wasmtime."
  @spec facts() :: String.t()
  def facts do
    {:ok, python} = Symbiont.Config.python_executable()

    {py, 0} =
      System.cmd(python, [
        "-c",
        "import sys; from importlib.metadata import version; print(sys.version.split()[0], version('wasmtime'))"
      ])

    [py_version, wasmtime] = String.split(String.trim(py))

    mem =
      with {:ok, info} <- File.read("/proc/meminfo"),
           [_, kb] <- Regex.run(~r/MemTotal:\s+(\d+)/, info),
           do: "#{div(String.to_integer(kb), 1024 * 1024)} GiB"

    cpu =
      with {:ok, info} <- File.read("/proc/cpuinfo"),
           [_, m] <- Regex.run(~r/model name\s*:\s*(.+)/, info),
           do: String.trim(m)

    "#{System.schedulers_online()} cores (#{cpu}), #{mem} RAM; OTP #{System.otp_release()}, " <>
      "Elixir #{System.version()}, Python #{py_version}, wasmtime #{wasmtime}"
  end
end

Code.require_file("report.exs", __DIR__)

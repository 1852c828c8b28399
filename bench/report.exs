# Renders bench/RESULTS.md from the results every benchmark recorded (bench/results/):
# the machine, one table of every figure beside its baseline, the scaling curves (tables
# and SVG plots in bench/plots/), each benchmark's details, and, kept as they are, the
# hand-written sections below the marker line.
defmodule Bench.Report do
  @results Path.expand("RESULTS.md", __DIR__)
  @plots Path.expand("plots", __DIR__)
  @marker "<!-- Everything below this line is written by hand: make bench keeps it. -->"

  @doc "Rewrites bench/RESULTS.md and the plots from the recorded results."
  @spec render() :: :ok
  def render do
    results = Bench.Results.read_all()
    {run, results} = Map.pop(results, "_run")
    ordered = order(results)

    File.mkdir_p!(@plots)

    for %{curves: curves} <- ordered, curve <- curves do
      File.write!(Path.join(@plots, "#{curve.name}.svg"), plot(curve))
    end

    rows = for r <- ordered, row <- r.rows, do: Map.put(row, :bench, r.bench)

    text =
      [
        "# Benchmark results\n",
        header(ordered, run),
        table(rows) <> "\n",
        runs(ordered),
        curves(ordered),
        details(ordered),
        @marker <> "\n",
        hand_written()
      ]
      |> Enum.reject(&(&1 == ""))
      |> Enum.join("\n")

    File.write!(@results, String.trim_trailing(text) <> "\n")
    IO.puts("wrote #{Path.relative_to_cwd(@results)}")
  end

  @doc """
  Records a run of the suite (`make bench`): which benchmarks ran, how long it took, and
  whether it was the short one.
  """
  @spec record_run([String.t()], number) :: :ok
  def record_run(names, seconds) do
    run = %{
      bench: "_run",
      names: names,
      seconds: seconds,
      date: Date.utc_today(),
      quick: Bench.Results.quick?()
    }

    File.write!(Path.join(Bench.Results.dir(), "_run.exs"), [
      Code.format_string!(inspect(run)),
      "\n"
    ])
  end

  # The suite's benchmarks in its order, then any other (the soak), by name.
  defp order(results) do
    suite = Bench.Results.suite()
    {known, other} = Enum.split_with(results, fn {name, _} -> name in suite end)
    index = fn {name, _} -> Enum.find_index(suite, &(&1 == name)) end
    Enum.map(Enum.sort_by(known, index) ++ Enum.sort(other), &elem(&1, 1))
  end

  defp header(ordered, run) do
    machines = ordered |> Enum.map(& &1.machine) |> Enum.uniq()

    machine =
      case machines do
        [m] -> "Machine: #{m}."
        ms -> "Machines (the benchmarks ran on several): " <> Enum.join(ms, "; ") <> "."
      end

    suite =
      if run do
        minutes = :erlang.float_to_binary(run.seconds / 60, decimals: 1)

        "`make bench#{if run.quick, do: " QUICK=1"}` ran #{Enum.join(run.names, ", ")} " <>
          "on #{run.date} in #{minutes} min#{if run.quick, do: " (the short run: figures are less stable)"}."
      else
        ""
      end

    """
    #{machine}#{if suite != "", do: "\n" <> suite}
    Each figure comes from one run of its benchmark, beside its baseline measured in the
    same run; the ratios are what the targets are about, since absolute times vary between
    machines. A target ending in × bounds the ratio, any other the figure itself. How the
    suite works and how to add a benchmark: [README.md](README.md).
    """
  end

  @doc "The markdown table of `rows` (each with its `:bench`)."
  @spec table([map]) :: String.t()
  def table(rows) do
    lines =
      for row <- rows do
        ratio = Bench.Results.ratio(row)

        met =
          case Bench.Results.meets?(row) do
            nil -> "-"
            true -> "yes"
            false -> "**no**"
          end

        cells = [
          row.bench,
          row.measure,
          Bench.Results.number(row.value),
          row.baseline || "-",
          if(is_number(row.base), do: Bench.Results.number(row.base), else: "-"),
          if(ratio, do: "#{Float.round(ratio, 2)}×", else: "-"),
          row.target,
          met
        ]

        "| " <> Enum.join(cells, " | ") <> " |"
      end

    Enum.join(
      [
        "| bench | measure | Symbiont | baseline | value | ratio | target | met |",
        "|---|---|---|---|---|---|---|---|" | lines
      ],
      "\n"
    )
  end

  defp runs(ordered) do
    items =
      for r <- ordered do
        quick = if r.quick, do: ", QUICK=1", else: ""
        "`#{r.bench}` #{r.date} (#{round(r.seconds)} s#{quick})"
      end

    "Runs: " <> Enum.join(items, "; ") <> ". Command: `mix run --no-start bench/NAME.exs`.\n"
  end

  defp curves(ordered) do
    case for(r <- ordered, c <- r.curves, do: c) do
      [] ->
        ""

      curves ->
        intro = """
        ## Scaling curves

        Throughput and p99 latency as the work grows (bench/curves.exs). In each table, "vs
        first" divides by the first point. A throughput (deliveries per second) that stays
        at 1.0 means the cost of a delivery does not grow with the scale (the dashed flat
        line in the plot); below 1.0 it grows faster than the work. The latency of one
        publish to all N grows at least like N once they outnumber the cores (the dashed
        line beside it, on a log scale); above that line its cost grows faster than the
        work.
        """

        Enum.join([intro | Enum.map(curves, &curve_section/1)], "\n")
    end
  end

  defp curve_section(c) do
    [{_, t0, p0} | _] = c.points

    rows =
      for {x, t, p} <- c.points do
        "| #{x} | #{Bench.Results.number(t)} | #{Float.round(t / t0, 2)} | " <>
          "#{Bench.Results.number(p)} | #{Float.round(p / p0, 2)} |"
      end

    """
    ### #{c.title}

    ![#{c.title}](plots/#{c.name}.svg)

    | #{c.x} | #{c.throughput} | vs first | #{c.p99} | vs first |
    |---|---|---|---|---|
    #{Enum.join(rows, "\n")}
    """
  end

  # Throughput beside a flat line (the cost of a unit of work stays the same), p99 beside
  # a line that grows like the work (N).
  defp plot(c) do
    [{x0, t0, p0} | _] = c.points
    through = for {x, t, _} <- c.points, do: {x, t}
    flat = for {x, _, _} <- c.points, do: {x, t0}
    p99 = for {x, _, p} <- c.points, do: {x, p}
    linear = for {x, _, _} <- c.points, do: {x, p0 * x / x0}

    Bench.Plot.svg([
      %{
        title: c.title,
        x: c.x,
        y: c.throughput,
        log_y: false,
        series: [
          %{label: "measured", points: through, dashed: false},
          %{label: "same cost per delivery", points: flat, dashed: true}
        ]
      },
      %{
        title: "p99 latency",
        x: c.x,
        y: c.p99,
        log_y: true,
        series: [
          %{label: "measured", points: p99, dashed: false},
          %{label: "grows like N", points: linear, dashed: true}
        ]
      }
    ])
  end

  defp details(ordered) do
    case for(
           r <- ordered,
           is_binary(r.details),
           do: "### #{r.bench}\n\n#{String.trim(r.details)}\n"
         ) do
      [] -> ""
      sections -> Enum.join(["## Details\n" | sections], "\n")
    end
  end

  # What follows the marker in the current file; the first time, the old notes.
  defp hand_written do
    case File.read(@results) do
      {:ok, text} ->
        case String.split(text, @marker, parts: 2) do
          [_, kept] -> String.trim_leading(kept, "\n")
          [_] -> legacy_notes(text)
        end

      {:error, _} ->
        "## Notes\n"
    end
  end

  defp legacy_notes(text) do
    case String.split(text, ~r/^## notes\n/m, parts: 2) do
      [_, notes] -> "## Notes\n" <> notes
      [_] -> "## Notes\n"
    end
  end
end

Code.require_file("plot.exs", __DIR__)

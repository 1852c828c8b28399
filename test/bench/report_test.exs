# The benchmark harness (bench/): targets, the table, the plots. The benchmarks themselves
# run with `make bench`, never in the tests.
Code.require_file("../../bench/results.exs", __DIR__)

defmodule Bench.ReportTest do
  use ExUnit.Case, async: true

  describe "Bench.Results.meets?/1" do
    test "a target ending in × bounds the ratio to the baseline" do
      assert Bench.Results.meets?(%{value: 40, base: 80, target: "≤ 1.2×"})
      refute Bench.Results.meets?(%{value: 100, base: 80, target: "≤ 1.2×"})
      assert Bench.Results.meets?(%{value: 60, base: 100, target: "≥ 0.5×"})
      assert Bench.Results.meets?(%{value: 6, base: 950, target: "≤ 0.05× (20× faster)"})
    end

    test "any other target bounds the figure itself, k and M multiplying" do
      assert Bench.Results.meets?(%{value: 15.2, base: 8.5, target: "< 20 MB"})
      refute Bench.Results.meets?(%{value: 20.0, base: 8.5, target: "< 20 MB"})
      assert Bench.Results.meets?(%{value: 120_000, base: 200_000, target: "≥ 100k/s"})
      refute Bench.Results.meets?(%{value: 99_999, base: nil, target: "≥ 100k/s"})
      assert Bench.Results.meets?(%{value: 2_000_000, base: nil, target: "> 1M/s"})
    end

    test "no target, or a ratio without a baseline, is not met or missed" do
      assert Bench.Results.meets?(%{value: 1, base: 2, target: "(info)"}) == nil
      refute Bench.Results.meets?(%{value: 1, base: nil, target: "≤ 2×"})
    end
  end

  test "one table: every row beside its baseline, the ratio, the target and met" do
    rows = [
      Map.put(Bench.Results.row("call p50 (µs)", 40.0, "raw echo", 80.0, "≤ 1.2×"), :bench, "rt"),
      Map.put(Bench.Results.row("memory (MB)", 25.0, nil, nil, "< 20 MB"), :bench, "idle"),
      Map.put(Bench.Results.row("modules", 105, "bare", 33, "(info)"), :bench, "idle")
    ]

    assert Bench.Report.table(rows) ==
             """
             | bench | measure | Symbiont | baseline | value | ratio | target | met |
             |---|---|---|---|---|---|---|---|
             | rt | call p50 (µs) | 40.0 | raw echo | 80.0 | 0.5× | ≤ 1.2× | yes |
             | idle | memory (MB) | 25.0 | - | - | - | < 20 MB | **no** |
             | idle | modules | 105 | bare | 33 | 3.18× | (info) | - |\
             """
  end

  test "the plot is an SVG document with a line and a point for each measure" do
    points = [{1, 50_000.0}, {4, 95_000.0}, {16, 77_000.0}]

    svg =
      Bench.Plot.svg([
        %{
          title: "Fan-out <to> N",
          x: "hosts",
          y: "deliveries/s",
          log_y: false,
          series: [%{label: "measured", points: points, dashed: false}]
        },
        %{
          title: "p99",
          x: "hosts",
          y: "µs",
          log_y: true,
          series: [%{label: "grows like N", points: [{1, 200.0}, {16, 3200.0}], dashed: true}]
        }
      ])

    assert svg =~ ~r{\A<svg xmlns="http://www.w3.org/2000/svg".*</svg>\n\z}s
    assert length(Regex.scan(~r/<g>/, svg)) == length(Regex.scan(~r{</g>}, svg))
    assert length(Regex.scan(~r/<polyline /, svg)) == 2
    assert length(Regex.scan(~r/<circle /, svg)) == 3
    assert svg =~ "Fan-out &lt;to&gt; N"
  end
end

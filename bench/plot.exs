# A tiny SVG line-plot generator for the scaling curves of bench/RESULTS.md: no
# dependencies, one function. The x axis is logarithmic (the curves go 1, 10, 100, ...),
# the y axis linear from 0, or logarithmic.
defmodule Bench.Plot do
  @width 360
  @height 240
  # Margins: left, right, top, bottom.
  @ml 62
  @mr 14
  @mt 28
  @mb 40
  @colors ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]

  @typedoc """
  One line: its label, its points `{x, y}` (x > 0), and `dashed: true` for a reference
  line.
  """
  @type series :: %{label: String.t(), points: [{number, number}], dashed: boolean}

  @typedoc "A panel: its title, axis labels, lines, and whether the y axis is logarithmic."
  @type panel :: %{
          title: String.t(),
          x: String.t(),
          y: String.t(),
          series: [series],
          log_y: boolean
        }

  @doc """
  An SVG document of `panels` side by side.

      iex> series = [%{label: "a", points: [{1, 2}, {10, 3}], dashed: false}]
      iex> svg = Bench.Plot.svg([%{title: "t", x: "hosts", y: "msgs/s", series: series, log_y: false}])
      iex> String.starts_with?(svg, "<svg")
      true
  """
  @spec svg([panel]) :: String.t()
  def svg(panels) do
    width = @width * length(panels)

    body =
      panels
      |> Enum.with_index()
      |> Enum.map(fn {panel, i} -> panel(panel, i * @width) end)

    IO.iodata_to_binary([
      ~s(<svg xmlns="http://www.w3.org/2000/svg" width="#{width}" height="#{@height}" ),
      ~s(viewBox="0 0 #{width} #{@height}" font-family="sans-serif" font-size="11">\n),
      ~s(<rect width="100%" height="100%" fill="white"/>\n),
      body,
      "</svg>\n"
    ])
  end

  defp panel(%{title: title, x: x_label, y: y_label, series: series} = panel, dx) do
    points = Enum.flat_map(series, & &1.points)
    xs = Enum.map(points, &elem(&1, 0))
    ys = Enum.map(points, &elem(&1, 1))
    {x0, x1} = {Enum.min(xs), Enum.max(xs)}
    {lx0, lx1} = {:math.log10(x0), :math.log10(max(x1, x0 * 10))}
    {pw, ph} = {@width - @ml - @mr, @height - @mt - @mb}
    sx = fn x -> dx + @ml + (:math.log10(x) - lx0) / (lx1 - lx0) * pw end

    {sy, y_ticks} =
      if panel[:log_y] do
        {e0, e1} = {floor(:math.log10(Enum.min(ys))), ceil(:math.log10(Enum.max(ys)))}
        e1 = max(e1, e0 + 1)
        sy = fn y -> @mt + ph - (:math.log10(max(y, 1.0e-9)) - e0) / (e1 - e0) * ph end
        {sy, for(e <- e0..e1, do: :math.pow(10, e))}
      else
        step = nice_step((ys |> Enum.max() |> max(1.0e-9)) / 4)
        top = ceil(Enum.max(ys) / step - 1.0e-9)
        y1 = step * max(top, 1)
        {fn y -> @mt + ph - y / y1 * ph end, for(t <- 0..max(top, 1), do: step * t)}
      end

    # A tick at each measured x.
    x_ticks = xs |> Enum.uniq() |> Enum.sort()

    [
      ~s(<g>\n),
      text(dx + @width / 2, 16, title, "middle", "bold"),
      # Axes and grid.
      for y <- y_ticks do
        [
          line(dx + @ml, sy.(y), dx + @ml + pw, sy.(y), "#ddd"),
          text(dx + @ml - 5, sy.(y) + 4, label(y), "end")
        ]
      end,
      for t <- x_ticks do
        [
          line(sx.(t), @mt, sx.(t), @mt + ph, "#eee"),
          text(sx.(t), @mt + ph + 14, label(t), "middle")
        ]
      end,
      line(dx + @ml, @mt + ph, dx + @ml + pw, @mt + ph, "#333"),
      line(dx + @ml, @mt, dx + @ml, @mt + ph, "#333"),
      text(dx + @ml + pw / 2, @height - 6, x_label <> " (log scale)", "middle"),
      # y label: the unit, and the scale when it is logarithmic.
      ~s|<text transform="translate(#{f(dx + 12)},#{f(@mt + ph / 2)}) rotate(-90)" |,
      ~s|text-anchor="middle">#{escape(y_label <> if(panel[:log_y], do: " (log scale)", else: ""))}</text>\n|,
      # The lines, then the legend.
      series
      |> Enum.with_index()
      |> Enum.map(fn {s, i} ->
        color = Enum.at(@colors, rem(i, length(@colors)))
        path = Enum.map_join(s.points, " ", fn {x, y} -> "#{f(sx.(x))},#{f(sy.(y))}" end)
        dash = if s[:dashed], do: ~s( stroke-dasharray="5,4"), else: ""

        [
          ~s(<polyline fill="none" stroke="#{color}" stroke-width="2"#{dash} points="#{path}"/>\n),
          if s[:dashed] do
            []
          else
            for {x, y} <- s.points,
                do: ~s(<circle cx="#{f(sx.(x))}" cy="#{f(sy.(y))}" r="3" fill="#{color}"/>\n)
          end,
          line(dx + @ml + 8, @mt + 8 + 14 * i, dx + @ml + 26, @mt + 8 + 14 * i, color, dash),
          text(dx + @ml + 30, @mt + 12 + 14 * i, s.label, "start")
        ]
      end),
      "</g>\n"
    ]
  end

  # The smallest 1, 2, 2.5 or 5 times a power of ten at or above `y`: a tick step.
  defp nice_step(y) do
    p = :math.pow(10, floor(:math.log10(y)))
    Enum.find([1, 2, 2.5, 5, 10], &(&1 * p >= y * 0.999)) * p
  end

  defp label(x) when x >= 1_000_000, do: trim(x / 1_000_000) <> "M"
  defp label(x) when x >= 1_000, do: trim(x / 1_000) <> "k"
  defp label(x), do: trim(x)

  defp trim(x) do
    rounded = Float.round(x / 1, 2)
    if rounded == trunc(rounded), do: Integer.to_string(trunc(rounded)), else: "#{rounded}"
  end

  defp line(x1, y1, x2, y2, color, extra \\ "") do
    ~s(<line x1="#{f(x1)}" y1="#{f(y1)}" x2="#{f(x2)}" y2="#{f(y2)}" stroke="#{color}"#{extra}/>\n)
  end

  defp text(x, y, s, anchor, weight \\ "normal") do
    ~s(<text x="#{f(x)}" y="#{f(y)}" text-anchor="#{anchor}" font-weight="#{weight}">#{escape(s)}</text>\n)
  end

  defp f(x), do: :erlang.float_to_binary(x / 1, decimals: 1)

  defp escape(s),
    do:
      s
      |> String.replace("&", "&amp;")
      |> String.replace("<", "&lt;")
      |> String.replace(">", "&gt;")
end

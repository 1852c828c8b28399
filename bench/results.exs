# Writes one benchmark's table into bench/RESULTS.md, under its own heading, with the
# machine facts and the date. Other sections of the file are kept.
defmodule Bench.Results do
  @path Path.expand("RESULTS.md", __DIR__)

  @doc "The median of a list of numbers."
  def median(xs), do: xs |> Enum.sort() |> Enum.at(div(length(xs), 2))

  @doc "Percentile `p` (0-100) of a sorted tuple of nanoseconds, in microseconds."
  def pct(sorted, p),
    do: elem(sorted, min(tuple_size(sorted) - 1, div(tuple_size(sorted) * p, 100))) / 1000

  @doc "Waits until `fun` returns true, checking every 5 ms; raises after two minutes."
  def wait(fun, deadline \\ System.monotonic_time(:millisecond) + 120_000) do
    cond do
      fun.() -> :ok
      System.monotonic_time(:millisecond) > deadline -> raise "bench: timed out waiting"
      true -> Process.sleep(5) && wait(fun, deadline)
    end
  end

  @doc "The \"met\" column: \"yes\" or \"no\"."
  def met(true), do: "yes"
  def met(false), do: "no"

  @doc "The number in a target such as \"≤ 1.5×\"."
  def target_value(target) do
    [_, n] = Regex.run(~r/([\d.]+)×/, target)
    {value, ""} = Float.parse(n)
    value
  end

  @doc "A figure for a table: whole numbers from 1000 up, one decimal below."
  def number(x) when x >= 1000, do: x |> round() |> Integer.to_string()
  def number(x), do: :erlang.float_to_binary(x / 1, decimals: 1)

  def write(section, table) do
    sections =
      case File.read(@path) do
        {:ok, text} -> parse(text)
        {:error, _} -> %{}
      end

    body = "Run on #{Date.utc_today()}: `#{command(section)}`\n\n" <> table
    sections = Map.put(sections, section, body)

    text =
      [
        "# Benchmark results\n",
        machine(),
        ""
        | Enum.map(Enum.sort_by(sections, &order/1), fn {k, v} ->
            "## #{k}\n\n#{String.trim(v)}\n"
          end)
      ]
      |> Enum.join("\n")

    File.write!(@path, text)
    IO.puts("wrote #{Path.relative_to_cwd(@path)} (#{section})")
  end

  # The benchmarks by name, then the notes, which speak of all of them.
  defp order({"notes", _}), do: {1, ""}
  defp order({name, _}), do: {0, name}

  defp command(section), do: "mix run --no-start bench/#{section}.exs"

  defp parse(text) do
    text
    |> String.split(~r/^## /m)
    |> tl()
    |> Map.new(fn chunk ->
      [name, body] = String.split(chunk, "\n", parts: 2)
      {String.trim(name), body}
    end)
  rescue
    _ -> %{}
  end

  defp machine do
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

    """
    Machine: #{System.schedulers_online()} cores (#{cpu}), #{mem} RAM; OTP #{System.otp_release()}, \
    Elixir #{System.version()}, Python #{py_version}, wasmtime #{wasmtime}.
    Each figure comes from one run, beside its baseline measured in the same run; the ratios
    are what the targets are about, since absolute times vary between machines.
    """
  end
end

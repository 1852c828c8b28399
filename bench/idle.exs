# The memory of an idle host: one that runs one trivial Python agent, beside a bare
# `python -c` process of the same executable, idle too; and, for comparison, a host that
# runs one Wasm agent (it imports wasmtime, which a Python agent's host never does).
#
#     make bench            # every benchmark; or: mix run --no-start bench/idle.exs
#
# Target (bench/RESULTS.md): an idle Python agent's host under 20 MB of memory (RSS: the
# pages it has in memory, shared ones included; PSS shares those among their users).

Application.put_env(:symbiont, :agents, [])
Logger.configure(level: :error)
{:ok, _} = Application.ensure_all_started(:symbiont)
Code.require_file("results.exs", __DIR__)

defmodule Bench.Idle do
  # Samples of each process, a little apart, once it has settled; the median is reported.
  @samples 5
  @settle_ms 1_000

  def run do
    {:ok, python} = Symbiont.Config.python_executable()
    bare = bare_python(python)

    python_host = host("idle-python", agent: [name: "idle-python", python: "bench_agents:Sink"])

    wasm_host =
      host("idle-wasm",
        agent: [
          name: "idle-wasm",
          wasm: Path.expand("../priv/wasm/counter.wat", __DIR__),
          topics: ["bench.idle"]
        ]
      )

    Process.sleep(@settle_ms)
    [bare_mem, py_mem, wasm_mem] = Enum.map([bare.os_pid, python_host, wasm_host], &memory/1)

    py_modules = modules("idle-python")
    wasm_modules = modules("idle-wasm")
    wasmtime? = wasmtime?("idle-python")
    Symbiont.Python.stop("idle-python")
    Symbiont.Python.stop("idle-wasm")
    Port.close(bare.port)

    row = &Bench.Results.row/5
    baseline = "bare `python -c`, idle"

    rows = [
      row.(
        "idle host, one Python agent: RSS (MB)",
        py_mem.rss,
        baseline,
        bare_mem.rss,
        "< 20 MB"
      ),
      row.("idle host, one Python agent: PSS (MB)", py_mem.pss, baseline, bare_mem.pss, "(info)"),
      row.(
        "idle host, one Python agent: modules imported",
        py_modules,
        baseline,
        bare.modules,
        "(info)"
      ),
      row.("idle host, one Wasm agent: RSS (MB)", wasm_mem.rss, baseline, bare_mem.rss, "(info)"),
      row.(
        "idle host, one Wasm agent: modules imported",
        wasm_modules,
        baseline,
        bare.modules,
        "(info)"
      )
    ]

    details = """
    The Python agent's host has wasmtime loaded: #{if wasmtime?, do: "**yes**", else: "no"} \
    (`symbiont.wasm` imports it on first use). Memory from `/proc/PID/smaps_rollup`, the \
    median of #{@samples} samples taken #{@settle_ms} ms after start.
    """

    Bench.Results.record("idle", rows, details: details)
  end

  defp host(name, opts) do
    {:ok, _} = Symbiont.Python.start([name: name, python_path: [__DIR__]] ++ opts)

    Bench.Results.wait(fn ->
      match?({:ok, %{status: :ready, agent: %{status: :ready}}}, Symbiont.Host.info(name))
    end)

    {:ok, %{os_pid: os_pid}} = Symbiont.Host.info(name)
    os_pid
  end

  # The baseline: the same executable, started the same way (a Port), idle in a read.
  defp bare_python(python) do
    port =
      Port.open({:spawn_executable, python}, [
        :binary,
        {:line, 256},
        args: ["-c", "import sys; print(len(sys.modules), flush=True); sys.stdin.read()"]
      ])

    modules = receive(do: ({^port, {:data, {:eol, n}}} -> String.to_integer(n)))
    {:os_pid, os_pid} = Port.info(port, :os_pid)
    %{port: port, os_pid: os_pid, modules: modules}
  end

  defp modules(host) do
    {:ok, n} = Symbiont.Python.call(host, "sys", "modules.__len__", [])
    n
  end

  defp wasmtime?(host) do
    {:ok, loaded?} = Symbiont.Python.call(host, "sys", "modules.__contains__", ["wasmtime"])
    loaded?
  end

  # RSS and PSS in MB, the median of a few samples.
  defp memory(os_pid) do
    samples =
      for _ <- 1..@samples do
        Process.sleep(100)
        text = File.read!("/proc/#{os_pid}/smaps_rollup")
        [_, rss] = Regex.run(~r/^Rss:\s+(\d+) kB/m, text)
        [_, pss] = Regex.run(~r/^Pss:\s+(\d+) kB/m, text)
        {String.to_integer(rss) / 1024, String.to_integer(pss) / 1024}
      end

    %{
      rss: Bench.Results.median(Enum.map(samples, &elem(&1, 0))),
      pss: Bench.Results.median(Enum.map(samples, &elem(&1, 1)))
    }
  end
end

Bench.Idle.run()

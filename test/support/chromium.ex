defmodule Symbiont.Chromium do
  @moduledoc false
  # A real headless Chromium (Debian's `chromium`), driven over the Chrome DevTools
  # Protocol, for the tests of pages. The protocol runs over --remote-debugging-pipe:
  # Chromium reads commands on fd 3 and writes replies and events on fd 4, each a JSON
  # text ended by a NUL byte. Those are exactly the fds of an Erlang port opened with
  # :nouse_stdio, so no websocket is needed.
  #
  # Waits are on real signals, each bounded: a command's reply, a protocol event, or a
  # promise in the page that a MutationObserver resolves when an element appears.

  use GenServer

  alias Symbiont.StatusPage.JSON

  @flags ~w(--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run
            --no-default-browser-check --disable-extensions --disable-background-networking
            --disable-component-update --disable-sync --mute-audio --hide-scrollbars
            --window-size=1280,900 --remote-debugging-pipe)

  @doc "The Chromium executable, or nil."
  def executable, do: Enum.find_value(~w(chromium chromium-browser), &System.find_executable/1)

  @doc """
  Starts Chromium with a profile in `dir` (its output goes to `dir`/chromium.log) and
  opens a blank tab; returns the driver. It is stopped when the test ends.
  """
  def start!(dir) do
    exe =
      executable() ||
        ExUnit.Assertions.flunk(
          "no chromium on this machine: `make browser` installs it (apt-get install chromium)"
        )

    {:ok, pid} = GenServer.start(__MODULE__, {exe, dir})
    ExUnit.Callbacks.on_exit(fn -> stop(pid) end)
    %{"targetId" => target} = command!(pid, "Target.createTarget", %{url: "about:blank"})

    %{"sessionId" => session} =
      command!(pid, "Target.attachToTarget", %{targetId: target, flatten: true})

    %{pid: pid, session: session}
  end

  @doc "Loads `url` in the tab and waits for its load event."
  def navigate!(%{pid: pid, session: session} = tab, url, timeout \\ 10_000) do
    command!(pid, "Page.enable", %{}, session)
    %{"frameId" => _} = command!(pid, "Page.navigate", %{url: url}, session)
    await_event!(pid, "Page.loadEventFired", timeout)
    tab
  end

  @doc """
  Waits until an element matching the CSS `selector` is in the page (now or after any
  change of the DOM) and returns its text; fails after `timeout` ms.
  """
  def wait_for!(%{pid: pid, session: session}, selector, timeout \\ 10_000) do
    expression = """
    new Promise((resolve, reject) => {
      const selector = #{JSON.encode(selector)};
      const found = () => document.querySelector(selector);
      if (found()) return resolve(found().textContent);
      const observer = new MutationObserver(() => {
        if (found()) { observer.disconnect(); resolve(found().textContent); }
      });
      observer.observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
      setTimeout(() => { observer.disconnect(); reject(new Error("no " + selector + " after #{timeout} ms")); }, #{timeout});
    })
    """

    evaluate!(pid, session, expression, timeout + 5_000)
  end

  @doc "Evaluates a JavaScript expression in the page and returns its value (JSON)."
  def eval!(%{pid: pid, session: session}, expression),
    do: evaluate!(pid, session, expression, 10_000)

  @doc "Saves a PNG screenshot of the tab to `path`."
  def screenshot!(%{pid: pid, session: session}, path) do
    %{"data" => data} = command!(pid, "Page.captureScreenshot", %{format: "png"}, session)
    File.write!(path, Base.decode64!(data))
    path
  end

  defp evaluate!(pid, session, expression, timeout) do
    params = %{expression: expression, awaitPromise: true, returnByValue: true}

    case command!(pid, "Runtime.evaluate", params, session, timeout) do
      %{"exceptionDetails" => details} ->
        ExUnit.Assertions.flunk(
          "in the page: " <> (get_in(details, ["exception", "description"]) || inspect(details))
        )

      %{"result" => result} ->
        result["value"]
    end
  end

  def command!(pid, method, params, session \\ nil, timeout \\ 10_000) do
    case GenServer.call(pid, {:command, method, params, session, timeout}, timeout + 1_000) do
      {:ok, result} -> result
      {:error, error} -> ExUnit.Assertions.flunk("#{method} failed: #{inspect(error)}")
    end
  end

  defp await_event!(pid, method, timeout) do
    case GenServer.call(pid, {:await, method, timeout}, timeout + 1_000) do
      {:ok, params} -> params
      :timeout -> ExUnit.Assertions.flunk("no #{method} from Chromium within #{timeout} ms")
    end
  end

  @doc "Closes the browser and makes sure its process is gone."
  def stop(pid) do
    GenServer.call(pid, :stop, 10_000)
  catch
    :exit, _ -> :ok
  end

  ## The driver process: owns the port, matches replies to calls, keeps events.

  @impl true
  def init({exe, dir}) do
    File.mkdir_p!(dir)
    log = Path.join(dir, "chromium.log")
    args = @flags ++ ["--user-data-dir=#{Path.join(dir, "profile")}", "about:blank"]

    # Through sh only to send Chromium's chatter to a file; `exec` keeps fds 3 and 4.
    port =
      Port.open({:spawn_executable, "/bin/sh"}, [
        :binary,
        :nouse_stdio,
        :exit_status,
        args: ["-c", ~s(exec "$0" "$@" >"$CHROMIUM_LOG" 2>&1), exe | args],
        env: [{~c"CHROMIUM_LOG", String.to_charlist(log)}]
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)

    {:ok,
     %{
       port: port,
       os_pid: os_pid,
       log: log,
       buffer: "",
       next: 1,
       calls: %{},
       events: [],
       waits: []
     }}
  end

  @impl true
  def handle_call({:command, method, params, session, timeout}, from, state) do
    id = state.next
    message = %{id: id, method: method, params: params}
    message = if session, do: Map.put(message, :sessionId, session), else: message
    Port.command(state.port, [JSON.encode(message), 0])
    timer = Process.send_after(self(), {:timeout, {:call, id}}, timeout)
    {:noreply, %{state | next: id + 1, calls: Map.put(state.calls, id, {from, timer})}}
  end

  def handle_call({:await, method, timeout}, from, state) do
    case Enum.split_with(state.events, &(&1["method"] == method)) do
      {[event | more], rest} ->
        {:reply, {:ok, event["params"]}, %{state | events: more ++ rest}}

      {[], _} ->
        ref = make_ref()
        Process.send_after(self(), {:timeout, {:wait, ref}}, timeout)
        {:noreply, %{state | waits: [{ref, method, from} | state.waits]}}
    end
  end

  def handle_call(:stop, _from, state) do
    Port.command(state.port, [JSON.encode(%{id: 0, method: "Browser.close"}), 0])

    receive do
      {port, {:exit_status, _}} when port == state.port -> :ok
    after
      5_000 -> Symbiont.Host.Reaper.kill(state.os_pid)
    end

    {:stop, :normal, :ok, state}
  end

  @impl true
  def handle_info({port, {:data, data}}, %{port: port} = state) do
    [last | complete] = :binary.split(state.buffer <> data, <<0>>, [:global]) |> Enum.reverse()
    state = complete |> Enum.reverse() |> Enum.reduce(%{state | buffer: last}, &message/2)
    {:noreply, state}
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = state) do
    {:stop, {:chromium_exited, status, File.read(state.log)}, state}
  end

  def handle_info({:timeout, {:call, id}}, state) do
    {call, calls} = Map.pop(state.calls, id)
    with {from, _timer} <- call, do: GenServer.reply(from, {:error, :timeout})
    {:noreply, %{state | calls: calls}}
  end

  def handle_info({:timeout, {:wait, ref}}, state) do
    case List.keytake(state.waits, ref, 0) do
      {{^ref, _, from}, waits} ->
        GenServer.reply(from, :timeout)
        {:noreply, %{state | waits: waits}}

      nil ->
        {:noreply, state}
    end
  end

  defp message(text, state) do
    case JSON.decode!(text) do
      %{"id" => id} = reply ->
        case Map.pop(state.calls, id) do
          {{from, timer}, calls} ->
            Process.cancel_timer(timer)

            GenServer.reply(
              from,
              if(reply["error"], do: {:error, reply["error"]}, else: {:ok, reply["result"]})
            )

            %{state | calls: calls}

          {nil, _} ->
            state
        end

      %{"method" => method} = event ->
        case Enum.find(Enum.reverse(state.waits), fn {_, m, _} -> m == method end) do
          {ref, _, from} ->
            GenServer.reply(from, {:ok, event["params"]})
            %{state | waits: List.keydelete(state.waits, ref, 0)}

          nil ->
            %{state | events: state.events ++ [event]}
        end
    end
  end
end

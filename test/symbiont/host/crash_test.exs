defmodule Symbiont.Host.CrashTest do
  # What each way a host's process goes down is called, in the log, in the `{:host_down,
  # reason}` of a failed call (Symbiont.Host.format_crash_reason/1) and in a `restart`
  # remediation: no process needed.
  use ExUnit.Case, async: true

  alias Symbiont.Host.Crash

  doctest Crash
  doctest Symbiont.Host, only: [validate_options: 1]

  test "an exit status, and the signal behind one over 128" do
    assert Crash.format_reason({:exit, 0}) == "exited with status 0"
    assert Crash.format_reason({:exit, 128}) == "exited with status 128"
    assert Crash.format_reason({:exit, 139}) == "exited with status 139 (signal 11)"
  end

  test "a protocol error says which" do
    assert Crash.format_reason({:protocol_error, {:start_timeout, 10_000}}) ==
             "was stopped after a protocol error: " <>
               Symbiont.Host.Protocol.format_error({:start_timeout, 10_000})
  end

  test "a restart on request says why it was asked for" do
    assert Crash.format_reason({:restarted, "rolling upgrade"}) ==
             "was restarted on request: rolling upgrade"
  end

  test "an unresponsive process: how long it was silent, and the heartbeats missed" do
    assert Crash.format_reason({:unresponsive, 3_012}) ==
             "was restarted: it sent nothing for 3012 ms (3 heartbeats missed; frozen or stuck in native code)"
  end

  test "a stalled handler names its agent and its handler_timeout" do
    assert Crash.format_reason({:stalled, "billing", 500}) ==
             "was restarted: a handler of agent billing did not stop after its handler_timeout of 500 ms"
  end

  test "a spawn failure, a closed pipe, and anything else" do
    assert Crash.format_reason({:spawn_failed, :enoent}) == "could not be started: :enoent"

    assert Crash.format_reason({:port_closed, :epipe}) ==
             "died (a write found its pipe closed, before its exit status could be read)"

    assert Crash.format_reason({:port_closed, :einval}) ==
             "went down: {:port_closed, :einval}"
  end

  test "Symbiont.Host.format_crash_reason/1 is the same" do
    for reason <- [{:exit, 1}, {:exit, 137}, {:restarted, "x"}, {:unresponsive, 5}, :other] do
      assert Symbiont.Host.format_crash_reason(reason) == Crash.format_reason(reason)
    end
  end
end

defmodule Symbiont.Examples.ShopTest do
  # The shop of `make shop` (examples/shop), booted from its own config file: orders flow
  # from orders (a Python class in the Wasm sandbox) through pricing (Wasm) and billing to
  # notifications, and the conductor,
  # running the shop's policy, scales out the stage that is too slow.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import Symbiont.HostHelpers

  @config "examples/shop/config.exs"

  setup_all do
    # The orders stage is shop.Orders built into a component, as `make shop` does.
    component!("examples/shop/shop.py:Orders", "_build/shop/orders.wasm")
    :ok
  end

  setup do
    shop = Config.Reader.read!(@config)[:symbiont]
    previous = Application.get_env(:symbiont, :python_path)
    Application.put_env(:symbiont, :python_path, shop[:python_path])
    on_exit(fn -> Application.put_env(:symbiont, :python_path, previous) end)
    %{shop: shop}
  end

  # The shop's agents, with what the test needs instead of the show's timing: a steady
  # 8 orders a second, no crashes, receipts at 0.3 s each, no release.
  defp agents(shop) do
    overrides = %{
      "orders" => %{"rate" => 8, "rush_for" => 0},
      "billing" => %{"crash_rate" => 0, "outage_for" => 0},
      "notifications" => %{"delay" => 0.3}
    }

    for agent <- shop[:agents], agent[:name] != "release" do
      Keyword.update(agent, :config, %{}, &Map.merge(&1, Map.get(overrides, agent[:name], %{})))
    end
  end

  test "orders are priced, charged and notified; the conductor scales out notifications",
       %{shop: shop} do
    agents = agents(shop)
    names = Enum.map(agents, & &1[:name])
    assert names == ~w(orders pricing billing notifications)

    :ok = Symbiont.subscribe("orders.priced")
    :ok = Symbiont.subscribe("notifications.sent")
    :ok = Symbiont.subscribe(Symbiont.Remediation.topic())

    capture_log(fn ->
      manifest = start_manifest!(agents)
      policy_host = unique_name("shop-policy")
      conductor = :"shop_conductor_#{System.unique_integer([:positive])}"

      start_supervised!(
        {Symbiont.Conductor,
         Keyword.merge(shop[:conductor],
           name: conductor,
           tick_ms: 200,
           cooldown_ms: 1_000,
           manifest: manifest,
           policy_host: policy_host,
           scope: &(&1 in names)
         )},
        id: conductor
      )

      on_exit(fn -> Symbiont.Python.stop(policy_host) end)

      # pricing.wasm adds the price (20% VAT) and keeps the rest of the order as it was.
      assert_receive %Symbiont.Event{topic: "orders.priced"} = e, 10_000

      assert %{"id" => _, "customer" => _, "amount" => amount, "price" => price} =
               Symbiont.Event.decode!(e)

      assert_in_delta price, amount * 1.2, 0.006

      # End to end: receipts go out for the orders, with their price.
      for _ <- 1..5 do
        assert_receive %Symbiont.Event{topic: "notifications.sent"} = e, 10_000
        assert %{"id" => id, "customer" => customer, "price" => price} = Symbiont.Event.decode!(e)
        assert is_integer(id) and is_binary(customer) and is_number(price) and price >= 6.0
      end

      # 8 orders a second against 3.3 receipts: the queue grows, the conductor scales it
      # to what Little's law says (arrivals x 300 ms a receipt, at 80% busy), at once.
      assert %{"by" => "conductor", "replicas" => n, "reason" => reason} =
               await_remediation("notifications", "scale", 12_000)

      assert n >= 2
      assert reason =~ ~r/^(capacity: .* need \d+ replicas|queue growing)/

      assert wait_until(fn -> "notifications#2" in Symbiont.Agent.Server.ids() end, 5_000)
    end)

    # Every order billed was priced first. Each state is its agent's last acked checkpoint
    # (pricing's, a Wasm agent's, decoded from what its module wrote), and pricing's ack
    # may come after billing's of the order it priced: read both again until they agree.
    assert wait_until(fn ->
             {:ok, %{state: %{"orders" => billed}}} = Symbiont.Agent.Server.info("billing")
             {:ok, %{state: %{"priced" => priced}}} = Symbiont.Agent.Server.info("pricing")
             billed > 0 and priced >= billed
           end)
  end
end

// A tiny storefront client typed by GraphQL Code Generator from the API's schema: every request
// and answer below is checked by tsc against `generated.ts`, which the test generates first. It
// uses no `any`; the test refuses one.
import type { TypedDocumentNode } from "@graphql-typed-document-node/core";
import { print } from "graphql";
import { createClient, type Client } from "graphql-ws";

import {
  AddToCartDocument,
  FollowMyOrdersDocument,
  OrdersPageDocument,
  PlaceOrderDocument,
  SignInDocument,
  type FollowMyOrdersSubscription,
  type OrderStatus,
  type OrdersPageQuery,
  type UserErrorCode,
} from "./generated.js";

interface GraphQLError {
  message: string;
  extensions?: { code?: string };
}

interface GraphQLResponse<T> {
  data?: T | null;
  errors?: GraphQLError[];
}

export class ApiError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
  }
}

export class Storefront {
  private token: string | null = null;

  constructor(
    private readonly url: string,
    private readonly wsUrl: string,
  ) {}

  private async request<TData, TVariables>(
    document: TypedDocumentNode<TData, TVariables>,
    variables: TVariables,
  ): Promise<TData> {
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    const res = await fetch(this.url, {
      method: "POST",
      headers,
      body: JSON.stringify({ query: print(document), variables }),
    });
    const body = (await res.json()) as GraphQLResponse<TData>;
    const first = body.errors?.[0];
    if (first) throw new ApiError(first.message, first.extensions?.code);
    if (!body.data) throw new ApiError("no data", undefined);
    return body.data;
  }

  async signIn(email: string, password: string): Promise<Date> {
    const { login } = await this.request(SignInDocument, { email, password });
    this.token = login.accessToken;
    return new Date(login.accessExpiresAt);
  }

  /** The cart's item count after adding, or what to tell the buyer. */
  async addToCart(sku: string, quantity: number): Promise<number | string> {
    const { addToCart } = await this.request(AddToCartDocument, { sku, quantity });
    const refusal = addToCart.userErrors[0];
    if (refusal) return explain(refusal.code, refusal.message);
    return addToCart.cart?.itemCount ?? 0;
  }

  /** The new order's id and status, or what to tell the buyer. */
  async placeOrder(idempotencyKey: string, paymentToken: string): Promise<{ id: string; status: OrderStatus } | string> {
    const { placeOrder } = await this.request(PlaceOrderDocument, { idempotencyKey, paymentToken });
    const refusal = placeOrder.userErrors[0];
    if (refusal || !placeOrder.order) return refusal ? explain(refusal.code, refusal.message) : "no order";
    return { id: placeOrder.order.id, status: placeOrder.order.status };
  }

  /** Every order, page by page (newest first). */
  async allOrders(pageSize: number): Promise<OrdersPageQuery["orders"]["edges"][number]["node"][]> {
    const out: OrdersPageQuery["orders"]["edges"][number]["node"][] = [];
    let after: string | null = null;
    for (;;) {
      const { orders }: OrdersPageQuery = await this.request(OrdersPageDocument, { first: pageSize, after });
      out.push(...orders.edges.map((e) => e.node));
      if (!orders.pageInfo.hasNextPage) return out;
      after = orders.pageInfo.endCursor ?? null;
    }
  }

  /** Calls `onChange` with each of the buyer's orders as it changes; returns a stop function. */
  followMyOrders(onChange: (order: FollowMyOrdersSubscription["myOrders"]) => void, onError: (e: unknown) => void): () => void {
    const token = this.token;
    const client: Client = createClient({ url: this.wsUrl, connectionParams: () => ({ authorization: `Bearer ${token}` }) });
    const stop = client.subscribe<FollowMyOrdersSubscription>(
      { query: print(FollowMyOrdersDocument) },
      {
        next: (result) => {
          if (result.data) onChange(result.data.myOrders);
        },
        error: onError,
        complete: () => undefined,
      },
    );
    return () => {
      stop();
      void client.dispose();
    };
  }
}

/** What to tell the buyer for each refusal: a new code fails to compile until it is handled here. */
export function explain(code: UserErrorCode, message: string): string {
  switch (code) {
    case "INVALID_SKU":
    case "UNKNOWN_SKU":
    case "NO_LONGER_SOLD":
      return `That product is not available: ${message}`;
    case "INVALID_QUANTITY":
    case "LINE_QUANTITY_TOO_LARGE":
    case "TOO_MANY_LINES":
      return `Please change the quantity: ${message}`;
    case "NOT_IN_CART":
    case "EMPTY_CART":
      return `Your cart has changed: ${message}`;
    case "TOTAL_TOO_LARGE":
    case "MIXED_CURRENCIES":
      return `This order cannot be placed online: ${message}`;
    case "INVALID_IDEMPOTENCY_KEY":
    case "INVALID_PAYMENT_TOKEN":
    case "INVALID_ORDER_ID":
      return `Something went wrong on our side: ${message}`;
    case "ORDER_NOT_FOUND":
    case "ORDER_ALREADY_CONFIRMED":
    case "ORDER_ALREADY_CANCELLED":
    case "ORDER_NOT_CONFIRMED":
      return `This order cannot be changed: ${message}`;
    case "REFUND_WINDOW_CLOSED":
      return `Please contact us for this refund: ${message}`;
    case "TOO_MANY_OPEN_ORDERS":
      return `Please wait until your other orders are through: ${message}`;
    case "INVALID_REFUND_REASON":
      return `Please tell us why: ${message}`;
    case "INVALID_EMAIL":
    case "EMAIL_TAKEN":
    case "PASSWORD_TOO_SHORT":
    case "PASSWORD_TOO_LONG":
    case "INVALID_CREDENTIALS":
    case "INVALID_ADDRESS":
      return message;
    case "CART_NOT_FOUND":
      return `Your cart has expired: ${message}`;
    default: {
      const unhandled: never = code;
      return unhandled;
    }
  }
}

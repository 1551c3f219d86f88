// The words the forms offer (symbols, timeframes, trend lines, strategies), read once from the
// API's own OpenAPI document, so the page lists exactly what the API validates.
import { get } from './api.js';

let loaded = null;

function enumOf(schema) {
  if (!schema || typeof schema !== 'object') return null;
  if (Array.isArray(schema.enum)) return schema.enum;
  for (const key of ['anyOf', 'oneOf', 'allOf']) {
    for (const option of schema[key] || []) {
      const found = enumOf(option);
      if (found) return found;
    }
  }
  return null;
}

export function catalog() {
  if (!loaded) {
    loaded = get('/api/openapi.json').then((doc) => {
      const props = ((doc.components || {}).schemas || {}).AddTickerBody?.properties || {};
      const symbols = enumOf(props.symbol) || [];
      return {
        // Futures are listed with and without the slash: offer the slashed spelling once.
        symbols: symbols.filter((s) => s.startsWith('/') || !symbols.includes(`/${s}`)),
        timeframes: enumOf(props.timeframe) || [],
        trendLines: enumOf(props.trend_line_1) || [],
        strategies: enumOf(props.strategy) || ['ema', 'supertrend', 'zeroday'],
      };
    }).catch((error) => {
      loaded = null;
      throw error;
    });
  }
  return loaded;
}

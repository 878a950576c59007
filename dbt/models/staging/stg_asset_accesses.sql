-- Page views (asset_accessed), without client IP, user agent, session or URL (personal data).
select
    happening_id,
    event_id,
    event_time,
    user_id,
    asset_id,
    asset_type,
    asset_subtype,
    asset_name,
    category,
    role,
    context_type,
    context_id,
    case when context_type = 'Course' then context_id end as course_id
from {{ source('canvas', 'asset_accesses') }}
